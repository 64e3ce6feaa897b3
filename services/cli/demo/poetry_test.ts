import { assertEquals, assertGreater } from "@std/assert";
import { parse } from "@std/csv";
import { buildDemoData, formOf, FORMS, verseLines } from "./poetry.ts";

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

Deno.test("buildDemoData() writes a corpus of documents and balanced labelled splits", async () => {
  const out = await Deno.makeTempDir();
  const root = new URL("../../..", import.meta.url).pathname;
  const data = await buildDemoData(root, out, { corpusPoems: 300, labelledPerForm: 40 });
  assertEquals(data.documents, 300);
  const corpus = await Deno.readTextFile(data.corpusPath);
  assertEquals(corpus.split("\n\n").filter((d) => d.trim()).length, 300);
  const train = parse(await Deno.readTextFile(data.trainPath), { skipFirstRow: true }) as Record<
    string,
    string
  >[];
  const evalRows = parse(await Deno.readTextFile(data.evalPath), { skipFirstRow: true }) as Record<
    string,
    string
  >[];
  assertEquals(train.length + evalRows.length, 160);
  assertEquals(new Set(evalRows.map((r) => r.label)), new Set(FORMS));
  assertEquals(
    new Set(train.slice(0, 4).map((r) => r.label)),
    new Set(FORMS),
    "forms interleave from the start",
  );
  for (const row of train) {
    assertEquals(formOf({ title: "", author: "", paragraphs: [row.text!] }), row.label);
  }
  assertGreater(data.corpusBytes, 10_000);
  await Deno.remove(out, { recursive: true });
});
