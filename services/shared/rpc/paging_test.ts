import { assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import { pageOf, pageSize } from "./paging.ts";

const numbers = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Every page of `items` at `size`, following next_page_token the way a client does. */
function walk(items: number[], size: number): number[][] {
  const pages: number[][] = [];
  let token = "";
  do {
    const { items: got, page } = pageOf(items, { page_size: size, page_token: token });
    assertEquals(page.total_size, items.length);
    pages.push(got);
    token = page.next_page_token;
  } while (token !== "");
  return pages;
}

Deno.test("pageOf() of an empty list is one empty last page", () => {
  assertEquals(pageOf([], undefined), { items: [], page: { next_page_token: "", total_size: 0 } });
  assertEquals(pageOf([], { page_size: 5, page_token: "" }).page.next_page_token, "");
});

Deno.test("pageOf() at an exact multiple of the page size ends without an empty extra page", () => {
  assertEquals(walk(numbers(6), 3), [[0, 1, 2], [3, 4, 5]]);
  assertEquals(walk(numbers(7), 3), [[0, 1, 2], [3, 4, 5], [6]]);
  assertEquals(walk(numbers(3), 3), [[0, 1, 2]]);
});

Deno.test("pageOf() takes 100 for page_size 0 and caps it at 1000", () => {
  assertEquals(pageOf(numbers(250), {}).items.length, 100);
  assertEquals(pageOf(numbers(250), { page_size: 0 }).page.next_page_token, "100");
  const big = pageOf(numbers(2500), { page_size: 5000 });
  assertEquals([big.items.length, big.page.next_page_token], [1000, "1000"]);
  assertEquals(pageSize({ page_size: "7" }), 7); // uint64-style strings and HTTP query values
});

Deno.test("pageOf() past the end is an empty last page", () => {
  assertEquals(pageOf(numbers(3), { page_token: "9" }), {
    items: [],
    page: { next_page_token: "", total_size: 3 },
  });
});

Deno.test("pageOf() refuses a token it did not issue and a bad page_size, naming the field", () => {
  for (const token of ["abc", "-1", "1.5", " 2", "0x10", "1e3", "9".repeat(16), 3]) {
    assertThrows(
      () => pageOf(numbers(3), { page_token: token }),
      InvalidArgument,
      `page.page_token must be the next_page_token of a previous page: got ${JSON.stringify(token)}`,
    );
  }
  for (const size of [-1, 2.5, NaN, "x", true]) {
    assertThrows(() => pageOf(numbers(3), { page_size: size }), InvalidArgument, "page.page_size must be");
  }
  assertThrows(() => pageOf(numbers(3), "2"), InvalidArgument, "page must be a PageRequest message");
  assertThrows(
    () => pageOf(numbers(3), { page_token: "x" }, "request.page"),
    InvalidArgument,
    "request.page.page_token",
  );
});
