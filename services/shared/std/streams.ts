/** Subset of jsr:@std/streams (see README.md). */

/** Splits a text stream into lines (`\n` or `\r\n`), as std's TextLineStream; `allowCR` also splits on lone `\r`. */
export class TextLineStream extends TransformStream<string, string> {
  constructor(options: { allowCR?: boolean } = {}) {
    let buffer = "";
    const pattern = options.allowCR ? /\r\n|\r|\n/ : /\r?\n/;
    super({
      transform(chunk, controller) {
        buffer += chunk;
        for (;;) {
          const match = pattern.exec(buffer);
          if (!match) break;
          // A trailing lone \r may be the first half of \r\n split across chunks.
          if (options.allowCR && match[0] === "\r" && match.index === buffer.length - 1) break;
          controller.enqueue(buffer.slice(0, match.index));
          buffer = buffer.slice(match.index + match[0].length);
        }
      },
      flush(controller) {
        if (buffer.length > 0) {
          controller.enqueue(options.allowCR && buffer.endsWith("\r") ? buffer.slice(0, -1) : buffer);
        }
      },
    });
  }
}

export async function toText(stream: ReadableStream<Uint8Array> | ReadableStream<string>): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of stream as AsyncIterable<Uint8Array | string>) {
    text += typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
  }
  return text + decoder.decode();
}

export async function toArrayBuffer(stream: ReadableStream<Uint8Array>): Promise<ArrayBuffer> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of stream) {
    chunks.push(chunk);
    length += chunk.byteLength;
  }
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out.buffer;
}

export async function toJson(stream: ReadableStream<Uint8Array>): Promise<unknown> {
  return JSON.parse(await toText(stream));
}
