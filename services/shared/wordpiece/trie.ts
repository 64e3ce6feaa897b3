/**
 * The WordPiece vocabulary as a code point trie with two roots: word-initial pieces (every vocab token
 * verbatim) and continuation pieces (tokens that start with the continuation prefix, prefix removed).
 * Greedy longest match then walks the trie once from each piece start instead of slicing and hashing
 * every candidate substring as `tokenizers` does; both give the longest vocab entry at that position.
 *
 * Edges live in one open-addressing hash table keyed by (node, code point), all typed arrays: no
 * per-lookup allocation and no string keys.
 */

export const INITIAL_ROOT = 0;
export const CONTINUATION_ROOT = 1;

export class PieceTrie {
  /** Token id ending at each node, -1 where none does. */
  private terminal: Int32Array;
  private nodeCount = 2;
  private edgeNode: Int32Array;
  private edgeChar: Int32Array;
  private edgeChild: Int32Array;
  private mask: number;

  /** `vocab` maps token → id (later duplicates already won); `prefix` marks continuation pieces. */
  constructor(vocab: Map<string, number>, prefix: string) {
    let edges = 0;
    // Each token adds at most one node per code point under each root.
    for (const token of vocab.keys()) edges += 2 * token.length;
    let capacity = 1024;
    while (capacity < edges * 2) capacity *= 2;
    this.mask = capacity - 1;
    this.edgeNode = new Int32Array(capacity).fill(-1);
    this.edgeChar = new Int32Array(capacity);
    this.edgeChild = new Int32Array(capacity);
    this.terminal = new Int32Array(edges + 2).fill(-1);
    for (const [token, id] of vocab) {
      this.insert(INITIAL_ROOT, token, id);
      if (prefix !== "" && token.startsWith(prefix) && token.length > prefix.length) {
        this.insert(CONTINUATION_ROOT, token.slice(prefix.length), id);
      }
    }
  }

  /** Child of `node` along code point `cp`, or -1. */
  child(node: number, cp: number): number {
    let slot = (Math.imul(node, 0x9e3779b1) ^ Math.imul(cp, 0x85ebca77)) & this.mask;
    for (;;) {
      const owner = this.edgeNode[slot];
      if (owner === -1) return -1;
      if (owner === node && this.edgeChar[slot] === cp) return this.edgeChild[slot];
      slot = (slot + 1) & this.mask;
    }
  }

  /** Token id of the piece ending at `node`, or -1. */
  tokenAt(node: number): number {
    return this.terminal[node];
  }

  private insert(root: number, token: string, id: number): void {
    let node = root;
    for (const ch of token) {
      const cp = ch.codePointAt(0)!;
      let next = this.child(node, cp);
      if (next === -1) {
        next = this.nodeCount++;
        let slot = (Math.imul(node, 0x9e3779b1) ^ Math.imul(cp, 0x85ebca77)) & this.mask;
        while (this.edgeNode[slot] !== -1) slot = (slot + 1) & this.mask;
        this.edgeNode[slot] = node;
        this.edgeChar[slot] = cp;
        this.edgeChild[slot] = next;
      }
      node = next;
    }
    this.terminal[node] = id;
  }
}
