import { assert, assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import { encoderTensors, expectedTensors, initWeights } from "./checkpoint.ts";
import {
  FINAL_LAYER_NORM,
  isPreLayerNorm,
  layerNormPlacement,
  parameterCount,
  parseConfig,
  presetConfig,
} from "./config.ts";

const tiny = {
  vocab_size: 99,
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 37,
};

Deno.test("parseConfig() reads bertforge_layer_norm: absent is post-LN (HF BERT), 'pre' and 'post' kept", () => {
  const plain = parseConfig(tiny);
  assertEquals(layerNormPlacement(plain), "post");
  assertEquals("bertforge_layer_norm" in plain, false, "an HF config round-trips without the key");
  assertEquals(layerNormPlacement(parseConfig({ ...tiny, bertforge_layer_norm: "post" })), "post");
  assert(isPreLayerNorm(parseConfig(JSON.stringify({ ...tiny, bertforge_layer_norm: "pre" }))));
});

Deno.test("parseConfig() refuses an unknown bertforge_layer_norm, naming the key, the choices and the value", () => {
  for (const value of ["sandwich", "Pre", true, 1, null]) {
    assertThrows(
      () => parseConfig({ ...tiny, bertforge_layer_norm: value }),
      InvalidArgument,
      `config bertforge_layer_norm must be "pre" or "post" (absent means "post", HF BERT): current value is ${
        JSON.stringify(value)
      }`,
    );
  }
});

Deno.test("a pre-LN config has one more tensor, bert.encoder.LayerNorm, counted by parameterCount()", () => {
  const post = presetConfig("bert-mini", 1000);
  const pre = parseConfig({ ...post, bertforge_layer_norm: "pre" });
  const postNames = [...expectedTensors(post, { task: "pretrain" }).keys()];
  const preTensors = expectedTensors(pre, { task: "pretrain" });
  assertEquals(
    [...preTensors.keys()].filter((n) => !postNames.includes(n)),
    [`${FINAL_LAYER_NORM}.weight`, `${FINAL_LAYER_NORM}.bias`],
  );
  assertEquals(preTensors.get(`${FINAL_LAYER_NORM}.weight`), [256]);
  assert(
    encoderTensors(pre).has(`${FINAL_LAYER_NORM}.bias`),
    "part of the encoder, kept when a head changes",
  );
  assertEquals(parameterCount(pre) - parameterCount(post), 2 * 256);
  // parameterCount() agrees with the tensors themselves (the MLM decoder is tied, so not counted twice)
  const counted = [...initWeights(pre, { task: "pretrain" }).values()].reduce((n, t) => n + t.data.length, 0);
  assertEquals(parameterCount(pre), counted);
  const ln = initWeights(pre, { task: "pretrain" }).get(`${FINAL_LAYER_NORM}.weight`)!;
  assert(ln.data.every((x) => x === 1), "a LayerNorm starts as the identity scale");
});
