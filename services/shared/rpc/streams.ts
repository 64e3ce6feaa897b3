/**
 * Helpers for the streaming shapes the protos repeat: chunked uploads (UploadCorpus, UploadDataset,
 * ImportModel: a header, then file chunks), chunked downloads (ExportModel) and job watches (WatchJob,
 * resumed after a disconnect from the last event's `seq`).
 */
import { createHash } from "node:crypto";
import { InvalidArgument, ResourceExhausted } from "../errors.ts";
import type { RpcClient } from "./client.ts";
import type { Message } from "./serve.ts";
import { GrpcStatus } from "./status.ts";

/** Bytes per upload chunk: well under the message limit, big enough to amortise framing. */
export const CHUNK_BYTES = 1024 * 1024;

export interface UploadHeader {
  name: string;
  overwrite?: boolean;
  size_bytes?: number | string;
  description?: string;
  format?: string;
}

/** A file to upload: its path inside the artifact and where its bytes come from. */
export interface UploadSource {
  path: string;
  /** A local file path, bytes, or a stream. */
  source: string | Uint8Array | ReadableStream<Uint8Array>;
}

/**
 * Checks a path inside an artifact: relative, `/`-separated, no `..` or `.` segments, no empty
 * segments, no backslashes or NUL. Throws InvalidArgument naming `field`.
 */
export function validateRelativePath(path: string, field = "file.path"): string {
  if (
    path === "" || path.startsWith("/") || path.includes("\\") || path.includes("\0") ||
    path.split("/").some((segment) => segment === "" || segment === "." || segment === "..") ||
    /^[A-Za-z]:/.test(path)
  ) {
    throw new InvalidArgument(
      `${field} must be a relative path without "..", "." or empty segments: got "${path}"`,
    );
  }
  return path;
}

async function* chunksOf(source: UploadSource["source"], chunkBytes: number): AsyncGenerator<Uint8Array> {
  if (source instanceof Uint8Array) {
    for (let offset = 0; offset < source.length; offset += chunkBytes) {
      yield source.subarray(offset, Math.min(source.length, offset + chunkBytes));
    }
    return;
  }
  const stream = typeof source === "string" ? (await Deno.open(source, { read: true })).readable : source;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  for await (const piece of stream) {
    pending.push(piece);
    pendingBytes += piece.length;
    while (pendingBytes >= chunkBytes) {
      const joined = concat(pending, pendingBytes);
      yield joined.subarray(0, chunkBytes);
      const rest = joined.subarray(chunkBytes);
      pending = rest.length > 0 ? [rest] : [];
      pendingBytes = rest.length;
    }
  }
  if (pendingBytes > 0) yield concat(pending, pendingBytes);
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * The request messages of an upload RPC (`{chunk: {header}}`, then `{chunk: {file}}` ...), streaming each
 * source in chunks with its sha256 on the last one. Pass to `client.clientStream("UploadCorpus", ...)`.
 */
export async function* uploadRequests(
  header: UploadHeader,
  files: UploadSource[],
  chunkBytes = CHUNK_BYTES,
): AsyncGenerator<Message> {
  yield { chunk: { header } };
  for (const file of files) {
    validateRelativePath(file.path);
    const hash = createHash("sha256");
    let previous: Uint8Array | undefined;
    for await (const data of chunksOf(file.source, chunkBytes)) {
      // Hold one chunk back so the last one can carry eof and the hash.
      if (previous) yield { chunk: { file: { path: file.path, data: previous, eof: false, sha256: "" } } };
      hash.update(data);
      previous = data;
    }
    yield {
      chunk: {
        file: { path: file.path, data: previous ?? new Uint8Array(), eof: true, sha256: hash.digest("hex") },
      },
    };
  }
}

/**
 * The files of a local path as upload sources: a file as itself (named by its base name), a folder as
 * every regular file under it (named by relative path, sorted, hidden files skipped).
 */
export async function localUploadSources(path: string): Promise<UploadSource[]> {
  const info = await Deno.stat(path);
  if (info.isFile) return [{ path: path.split(/[\\/]/).pop()!, source: path }];
  if (!info.isDirectory) throw new InvalidArgument(`${path} is neither a file nor a folder`);
  const sources: UploadSource[] = [];
  const walk = async (dir: string, prefix: string) => {
    const entries: Deno.DirEntry[] = [];
    for await (const entry of Deno.readDir(dir)) entries.push(entry);
    entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    for (const entry of entries) {
      if (entry.name.startsWith(".")) continue;
      const full = `${dir}/${entry.name}`;
      const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory) await walk(full, relative);
      else if (entry.isFile) sources.push({ path: relative, source: full });
    }
  };
  await walk(path.replace(/[\\/]+$/, ""), "");
  if (sources.length === 0) throw new InvalidArgument(`${path} holds no files to upload`);
  return sources;
}

/** One file of an upload being received; read `stream` to the end before asking for the next file. */
export interface ReceivedFile {
  path: string;
  stream: ReadableStream<Uint8Array>;
}

export interface ReceivedUpload {
  header: UploadHeader & Message;
  /** The files in order. Each file's sha256 (when sent) is checked at its end: a mismatch errors its stream. */
  files(): AsyncGenerator<ReceivedFile>;
}

/** Largest upload a service takes unless configured (`--max-upload-bytes`): 8 GiB. */
export const DEFAULT_MAX_UPLOAD_BYTES = 8 * 1024 ** 3;

export interface ReceiveUploadOptions {
  /** Most bytes over all files; past it the file's stream errors RESOURCE_EXHAUSTED. @default DEFAULT_MAX_UPLOAD_BYTES */
  maxBytes?: number;
}

/** The refusal of an upload over the cap: names the cap and how to raise it. */
function overCap(bytes: number | string, cap: number): ResourceExhausted {
  return new ResourceExhausted(
    `the upload is ${bytes === "more" ? "over" : `${bytes} bytes,`} the limit of ${cap} bytes (${
      (cap / 2 ** 20).toFixed(0)
    } MiB): raise it on the service with --max-upload-bytes N or BERTFORGE_MAX_UPLOAD_BYTES`,
  );
}

/**
 * Server side of an upload RPC: reads the header (the first message must be one), then hands out the files
 * one at a time as streams, so a handler writes them to the store without holding them in memory.
 * Publish only after `files()` is exhausted without error, so a broken upload leaves nothing visible.
 * Bytes are counted as they arrive, so an upload past `maxBytes` is refused whatever its header claims.
 */
export async function receiveUpload(
  requests: AsyncIterable<Message>,
  options: ReceiveUploadOptions = {},
): Promise<ReceivedUpload> {
  const cap = options.maxBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const iterator = requests[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) throw new InvalidArgument("the upload stream is empty: send a chunk.header first");
  const header = first.value?.chunk?.header;
  if (!header) {
    throw new InvalidArgument("the first message of an upload must be chunk.header");
  }
  if (typeof header.name !== "string" || header.name === "") {
    throw new InvalidArgument("chunk.header.name must name the artifact to create");
  }
  const announced = Number(header.size_bytes ?? 0);
  if (announced > cap) throw overCap(announced, cap);
  let received = 0;
  let stashed: Message | undefined;
  const next = async (): Promise<Message | undefined> => {
    if (stashed) {
      const message = stashed;
      stashed = undefined;
      return message;
    }
    const result = await iterator.next();
    if (result.done) return undefined;
    const file = result.value?.chunk?.file;
    if (!file) throw new InvalidArgument("after the header, every upload message must be chunk.file");
    return file;
  };
  async function* files(): AsyncGenerator<ReceivedFile> {
    const seen = new Set<string>();
    while (true) {
      const firstChunk = await next();
      if (!firstChunk) return;
      const path = validateRelativePath(String(firstChunk.path), "chunk.file.path");
      if (seen.has(path)) {
        throw new InvalidArgument(`chunk.file.path "${path}" was sent twice, not in one run`);
      }
      seen.add(path);
      const hash = createHash("sha256");
      let current: Message | undefined = firstChunk;
      let finished = false;
      const stream = new ReadableStream<Uint8Array>({
        async pull(controller) {
          try {
            if (finished) return controller.close();
            const chunk = current ?? await next();
            current = undefined;
            if (!chunk) {
              finished = true;
              return controller.close();
            }
            if (chunk.path !== path) {
              stashed = chunk;
              finished = true;
              return controller.close();
            }
            const data = chunk.data instanceof Uint8Array ? chunk.data : new Uint8Array(chunk.data ?? []);
            received += data.length;
            if (received > cap) throw overCap("more", cap);
            hash.update(data);
            if (data.length > 0) controller.enqueue(data);
            if (chunk.eof) {
              finished = true;
              const digest = hash.digest("hex");
              if (chunk.sha256 && chunk.sha256 !== digest) {
                throw new InvalidArgument(
                  `chunk.file.sha256 of "${path}" does not match its bytes: sent ${chunk.sha256}, received ${digest}`,
                );
              }
              controller.close();
            }
          } catch (error) {
            controller.error(error);
          }
        },
      });
      yield { path, stream };
      // Drain what the handler left unread, so the next file starts at its own first chunk.
      if (!finished) {
        for await (const _ of stream) { /* discard */ }
      }
    }
  }
  return { header, files };
}

/**
 * Client side of a download (ExportModel): writes every `file` chunk of the stream under `dir`, creating
 * folders, and returns the paths written. `onFirst` receives the first message (ExportModel's summary).
 */
export async function saveDownload(
  messages: AsyncIterable<Message>,
  dir: string,
  onFirst?: (message: Message) => void,
): Promise<string[]> {
  const written: string[] = [];
  let open: { path: string; file: Deno.FsFile } | undefined;
  let first = true;
  try {
    for await (const message of messages) {
      if (first) {
        first = false;
        onFirst?.(message);
      }
      const chunk = message.file;
      if (!chunk || !chunk.path) continue;
      const path = validateRelativePath(String(chunk.path), "file.path");
      if (open?.path !== path) {
        open?.file.close();
        const target = `${dir}/${path}`;
        await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
        open = { path, file: await Deno.open(target, { write: true, create: true, truncate: true }) };
        written.push(path);
      }
      const data: Uint8Array = chunk.data instanceof Uint8Array
        ? chunk.data
        : new Uint8Array(chunk.data ?? []);
      for (let offset = 0; offset < data.length;) offset += await open.file.write(data.subarray(offset));
    }
  } finally {
    open?.file.close();
  }
  return written;
}

/** The final job states: a watch ends after one of them. */
export const FINAL_JOB_STATES: readonly string[] = [
  "JOB_STATE_SUCCEEDED",
  "JOB_STATE_FAILED",
  "JOB_STATE_CANCELLED",
];

export interface WatchOptions {
  /** Replay only events after this `seq`. @default 0 */
  afterSeq?: number;
  signal?: AbortSignal;
  /** Reconnect attempts after the stream broke with UNAVAILABLE (service restarting). @default 30 */
  maxReconnects?: number;
}

/**
 * Follows a job's events through `WatchJob` on a tokenizer, sharding or trainer client, yielding each
 * `JobEvent` once: when the stream breaks with UNAVAILABLE (a restart, a drain) it reconnects with
 * `after_seq` set to the last event seen, so nothing is lost or repeated. Ends when the server ends the
 * stream (the job is final).
 */
export async function* watchJob(
  client: RpcClient,
  jobId: string,
  options: WatchOptions = {},
): AsyncGenerator<Message> {
  let afterSeq = options.afterSeq ?? 0;
  let reconnects = 0;
  const maxReconnects = options.maxReconnects ?? 30;
  while (true) {
    try {
      for await (
        const response of client.serverStream("WatchJob", { job_id: jobId, after_seq: afterSeq }, {
          ...(options.signal ? { signal: options.signal } : {}),
        })
      ) {
        const event = response.event;
        if (!event) continue;
        if (typeof event.seq === "number" && event.seq <= afterSeq) continue;
        afterSeq = Number(event.seq);
        reconnects = 0;
        yield event;
      }
      return;
    } catch (error) {
      const code = (error as { grpcCode?: number }).grpcCode;
      if (code !== GrpcStatus.UNAVAILABLE || reconnects >= maxReconnects || options.signal?.aborted) {
        throw error;
      }
      reconnects++;
      await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 100 * 2 ** reconnects)));
    }
  }
}
