/**
 * The one place texts sent to a service are checked, so every service and protocol refuses alike:
 * inference over gRPC and HTTP, and the tokenizer. Sizes are UTF-8 bytes, as they travel on the wire.
 *
 * - {@linkcode MAX_TEXT_BYTES} per text (a text or its pair): BERT reads at most 512 tokens, so a text of
 *   megabytes is a mistake or an attack; each text still costs time, so it is bounded.
 * - {@linkcode MAX_REQUEST_TEXT_BYTES} per request, over all its texts, so one batch cannot take the
 *   process up by gigabytes.
 * - Invalid UTF-8 is refused naming the byte offset (protobuf and the HTTP decoder would otherwise turn
 *   it into U+FFFD, and the model would run on something the client never sent).
 *
 * @module
 */
import { InvalidArgument, ResourceExhausted } from "../errors.ts";
import { classifyCodePoint, REMOVED, WHITESPACE } from "../wordpiece/basic.ts";

/** Longest text (or text pair half) accepted, in UTF-8 bytes. */
export const MAX_TEXT_BYTES = 1024 * 1024;
/** Most UTF-8 bytes of text in one request, over all its texts. */
export const MAX_REQUEST_TEXT_BYTES = 4 * 1024 * 1024;

/** UTF-8 length of a string without encoding it (a long text is measured, not copied). */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * Offset of the first byte that does not start a valid UTF-8 sequence (a sequence cut off by the end
 * counts as invalid), or -1 when all are valid. `from` is where to start looking.
 */
export function invalidUtf8Offset(bytes: Uint8Array, from = 0): number {
  let i = from;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    // Lead byte → continuation bytes that follow and the smallest code point (no overlong forms).
    let need: number, min: number;
    if (b >= 0xc2 && b <= 0xdf) [need, min] = [1, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [need, min] = [2, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [need, min] = [3, 0x10000];
    else return i;
    let cp = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += need + 1;
  }
  return -1;
}

/** RESOURCE_EXHAUSTED for a request that is too large (HTTP 413), as opposed to a full queue (HTTP 429). */
export class PayloadTooLarge extends ResourceExhausted {}

/**
 * Checks one text of a request: at most {@linkcode MAX_TEXT_BYTES}, and no U+FFFD (what protobuf and a
 * lenient decoder make of invalid UTF-8; the offset is the first bad byte, as the bytes before it decoded
 * one for one). Adds its size to `budget`, the running total of the request.
 */
export function checkText(text: string, field: string, budget?: TextBudget): string {
  const bytes = utf8Length(text);
  if (bytes > MAX_TEXT_BYTES) {
    throw new PayloadTooLarge(
      `${field} is ${bytes} bytes of UTF-8; a text may have at most ${MAX_TEXT_BYTES} (BERT reads 512 tokens of it)`,
    );
  }
  const replaced = text.indexOf("\uFFFD");
  if (replaced >= 0) {
    throw new InvalidArgument(
      `${field} is not valid UTF-8 at byte ${utf8Length(text.slice(0, replaced))} (it decodes to U+FFFD)`,
    );
  }
  budget?.add(bytes, field);
  return text;
}

/** The running text size of one request, refused past {@linkcode MAX_REQUEST_TEXT_BYTES}. */
export class TextBudget {
  #bytes = 0;
  add(bytes: number, field: string): void {
    this.#bytes += bytes;
    if (this.#bytes > MAX_REQUEST_TEXT_BYTES) {
      throw new PayloadTooLarge(
        `${field}: the request holds over ${MAX_REQUEST_TEXT_BYTES} bytes of text, the most one request may; ` +
          `split it into several requests`,
      );
    }
  }
}

/**
 * True when nothing of the text would reach the model: every code point is whitespace or dropped by BERT's
 * clean text (NUL and other control characters). Such a text is refused as empty, whatever it is made of.
 */
export function isBlank(text: string): boolean {
  for (const char of text) {
    if ((classifyCodePoint(char.codePointAt(0)!) & (WHITESPACE | REMOVED)) === 0) return false;
  }
  return true;
}

/** Decodes bytes that must be UTF-8; InvalidArgument naming `field` and the first bad byte otherwise. */
export function decodeUtf8(bytes: Uint8Array, field: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new InvalidArgument(`${field} is not valid UTF-8 at byte ${Math.max(0, invalidUtf8Offset(bytes))}`);
  }
}
