/** Subset of jsr:@std/yaml (see README.md), over the npm `yaml` package (YAML 1.2). */
import YAML from "yaml";

export function parse(text: string): unknown {
  return YAML.parse(text);
}
export function parseAll(text: string): unknown[] {
  return YAML.parseAllDocuments(text).map((doc) => {
    if (doc.errors.length) throw new SyntaxError(doc.errors.map((e) => e.message).join("; "));
    return doc.toJSON();
  });
}
export function stringify(value: unknown): string {
  return YAML.stringify(value);
}
