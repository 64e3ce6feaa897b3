import { assertEquals, assertGreater } from "@std/assert";
import { parse } from "@std/csv";
import { buildDemoData, formOf, POETS, TASK_FORM, verseLines } from "./poetry.ts";

Deno.test("formOf() reads the regular form from the verse structure", () => {
  const quatrain = {
    title: "登鸛雀樓",
    author: "王之渙",
    paragraphs: ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。"],
  };
  assertEquals(verseLines(quatrain), ["白日依山盡", "黃河入海流", "欲窮千里目", "更上一層樓"]);
  assertEquals(formOf(quatrain), "五言絕句");
  const seven = {
    title: "",
    author: "",
    paragraphs: ["兩個黃鸝鳴翠柳，一行白鷺上青天。", "窗含西嶺千秋雪，門泊東吳萬里船。"],
  };
  assertEquals(formOf(seven), "七言絕句");
  assertEquals(formOf({ title: "", author: "", paragraphs: ["白日依山盡，黃河入海。"] }), undefined);
});

Deno.test("buildDemoData() writes a corpus of documents and poet labels over one form, balanced", async () => {
  const out = await Deno.makeTempDir();
  const root = new URL("../../..", import.meta.url).pathname;
  const data = await buildDemoData(root, out, { corpusPoems: 300, labelledPerPoet: 40 });
  assertEquals(data.documents, 300);
  const corpus = await Deno.readTextFile(data.corpusPath);
  assertEquals(corpus.split("\n\n").filter((d) => d.trim()).length, 300);
  const read = async (path: string) =>
    parse(await Deno.readTextFile(path), { skipFirstRow: true }) as Record<string, string>[];
  const train = await read(data.trainPath);
  const evalRows = await read(data.evalPath);
  assertEquals(train.length + evalRows.length, 160);
  for (const poet of POETS) {
    assertEquals([...train, ...evalRows].filter((r) => r.label === poet).length, 40, poet);
  }
  assertEquals(new Set(evalRows.map((r) => r.label)), new Set(POETS));
  assertEquals(
    new Set(train.slice(0, 4).map((r) => r.label)),
    new Set(POETS),
    "poets interleave from the start",
  );
  // One form, so the length of a poem says nothing about its poet.
  for (const row of [...train, ...evalRows]) {
    assertEquals(formOf({ title: "", author: "", paragraphs: [row.text!] }), TASK_FORM);
  }
  assertGreater(data.corpusBytes, 10_000);
  await Deno.remove(out, { recursive: true });
});
