import { assertEquals, assertRejects, assertThrows } from "@std/assert";
import { InvalidArgument, NotFound } from "../errors.ts";
import { LocalStore } from "../store/local.ts";
import { publish } from "../store/publish.ts";
import {
  listModelVersions,
  listVersions,
  modelPrefix,
  resolveVersion,
  validateName,
  validateVersion,
  versionFor,
} from "./registry.ts";

Deno.test("model registry: names, versions and prefixes", () => {
  assertEquals(validateName("bert-base_1.0"), "bert-base_1.0");
  assertThrows(
    () => validateName("../x", "finetune.base.name"),
    InvalidArgument,
    "finetune.base.name must be",
  );
  assertThrows(() => validateName(".x"), InvalidArgument, "not starting with '.'");
  assertThrows(() => validateVersion("a/b"), InvalidArgument, "published version like 20261125T150405Z");
  assertEquals(modelPrefix("m", "20261125T150405Z"), "models/m/20261125T150405Z");
  assertEquals(versionFor(new Date(Date.UTC(2026, 10, 25, 15, 4, 5, 678))), "20261125T150405Z");
});

Deno.test("model registry: pinned or latest, NotFound naming the model", async () => {
  const root = await Deno.makeTempDir({ prefix: "bertforge-registry-test-" });
  try {
    const store = new LocalStore(root);
    for (
      const [name, version] of [["a", "20260101T000000Z"], ["a", "20260201T000000Z"], [
        "b",
        "20250101T000000Z",
      ]]
    ) {
      await publish(store, modelPrefix(name, version), { "config.json": "{}" });
    }
    assertEquals(await listVersions(store, "a"), ["20260101T000000Z", "20260201T000000Z"]);
    assertEquals(
      [...await listModelVersions(store)],
      [["a", ["20260101T000000Z", "20260201T000000Z"]], ["b", ["20250101T000000Z"]]],
    );
    assertEquals(await resolveVersion(store, "a"), "20260201T000000Z");
    assertEquals(await resolveVersion(store, "a", "20260101T000000Z"), "20260101T000000Z");
    await assertRejects(() => resolveVersion(store, "ghost"), NotFound, "model ghost is not in the store");
    await assertRejects(
      () => resolveVersion(store, "a", "20990101T000000Z", "finetune.base"),
      NotFound,
      "finetune.base: model a has no version 20990101T000000Z",
    );
    await assertRejects(() => resolveVersion(store, "a", "../x", "model"), InvalidArgument, "model.version");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
