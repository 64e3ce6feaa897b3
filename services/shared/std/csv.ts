/**
 * Subset of jsr:@std/csv (see README.md): RFC 4180 `parse` (quoted fields, doubled quotes, newlines inside quotes,
 * CRLF) with `skipFirstRow`/`columns`, and `stringify`. Malformed quoting is a SyntaxError naming the line.
 */
export interface ParseOptions {
  skipFirstRow?: boolean;
  columns?: readonly string[];
  separator?: string;
}

export function parseRows(text: string, separator = ","): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let line = 1;
  let i = 0;
  if (text.charCodeAt(0) === 0xfeff) i = 1; // BOM
  let atFieldStart = true;
  while (i < text.length) {
    const c = text[i]!;
    if (atFieldStart && c === '"') {
      const startLine = line;
      i++;
      for (;;) {
        if (i >= text.length) throw new SyntaxError(`CSV line ${startLine}: quoted field is not closed`);
        const q = text[i]!;
        if (q === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (q === "\n") line++;
        field += q;
        i++;
      }
      const next = text[i];
      if (next !== undefined && next !== separator && next !== "\n" && next !== "\r") {
        throw new SyntaxError(`CSV line ${line}: unexpected '${next}' after a closing quote`);
      }
      atFieldStart = false;
      continue;
    }
    if (c === separator) {
      row.push(field);
      field = "";
      atFieldStart = true;
      i++;
    } else if (c === "\n" || c === "\r") {
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      atFieldStart = true;
      i += c === "\r" && text[i + 1] === "\n" ? 2 : 1;
      line++;
    } else {
      field += c;
      atFieldStart = false;
      i++;
    }
  }
  if (!atFieldStart || field !== "" || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

export function parse(text: string, options: ParseOptions = {}): string[][] | Record<string, string>[] {
  const rows = parseRows(text, options.separator);
  if (!options.skipFirstRow && !options.columns) return rows;
  const columns = options.columns ?? rows[0] ?? [];
  const body = options.skipFirstRow ? rows.slice(1) : rows;
  return body.map((row, index) => {
    if (row.length !== columns.length) {
      throw new SyntaxError(
        `CSV record ${
          index + 1 + (options.skipFirstRow ? 1 : 0)
        } has ${row.length} fields, expected ${columns.length}`,
      );
    }
    return Object.fromEntries(columns.map((c, i) => [c, row[i]!]));
  });
}

export function stringify(
  rows: readonly (readonly unknown[])[] | readonly Record<string, unknown>[],
  options: { columns?: string[]; headers?: boolean } = {},
): string {
  const quote = (v: unknown) => {
    const s = v === undefined || v === null ? "" : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  const lines: string[] = [];
  if (options.columns) {
    if (options.headers !== false) lines.push(options.columns.map(quote).join(","));
    for (const r of rows as Record<string, unknown>[]) {
      lines.push(options.columns.map((c) => quote(r[c])).join(","));
    }
  } else {
    for (const r of rows as unknown[][]) lines.push(r.map(quote).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}
