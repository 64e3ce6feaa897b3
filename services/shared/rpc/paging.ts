/**
 * Pagination of List calls (common.proto PageRequest/PageResponse) over a list the service has in hand:
 * the token is the offset of the next page as a decimal string, so it stays valid while the list only
 * grows at its end and needs no server state.
 *
 * ```ts
 * import { pageOf } from "./paging.ts";
 * const { items, page } = pageOf(["a", "b", "c"], { page_size: 2 }); // ["a", "b"], next_page_token "2"
 * pageOf(["a", "b", "c"], { page_size: 2, page_token: page.next_page_token }); // ["c"], next_page_token ""
 * ```
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import type { Message } from "./serve.ts";

/** Items on a page when the request leaves page_size at 0. */
export const DEFAULT_PAGE_SIZE = 100;
/** Larger page sizes are capped to this, not refused (common.proto). */
export const MAX_PAGE_SIZE = 1000;

/** common.proto PageResponse. */
export interface PageResponse {
  next_page_token: string;
  total_size: number;
}

/** The request's `page`, `{}` when absent; a page that is not a message (HTTP JSON) is refused. */
function pageMessage(page: unknown, field: string): Message {
  if (page === undefined || page === null) return {};
  if (typeof page !== "object" || Array.isArray(page)) {
    throw new InvalidArgument(`${field} must be a PageRequest message: got ${JSON.stringify(page)}`);
  }
  return page as Message;
}

/**
 * How many items a page holds: `page_size`, 0 or absent meaning 100, capped to 1000. Over gRPC it is a
 * uint32; through HTTP it can be anything, and a negative or fractional size is refused.
 */
export function pageSize(page: unknown, field = "page"): number {
  const value = pageMessage(page, field).page_size;
  const n = value === undefined || value === null || value === ""
    ? 0
    : typeof value === "number" || typeof value === "string"
    ? Number(value)
    : NaN;
  if (!Number.isInteger(n) || n < 0) {
    throw new InvalidArgument(
      `${field}.page_size must be a whole number >= 0 (0 means ${DEFAULT_PAGE_SIZE}, above ${MAX_PAGE_SIZE} ` +
        `means ${MAX_PAGE_SIZE}): got ${typeof value === "number" ? value : JSON.stringify(value)}`,
    );
  }
  return Math.min(MAX_PAGE_SIZE, n || DEFAULT_PAGE_SIZE);
}

/** Where the page starts: 0 for an empty token, else the `next_page_token` of an earlier page. */
function pageStart(page: Message, field: string): number {
  const token = page.page_token ?? "";
  if (token === "") return 0;
  if (typeof token !== "string" || !/^\d{1,15}$/.test(token)) {
    throw new InvalidArgument(
      `${field}.page_token must be the next_page_token of a previous page: got ${JSON.stringify(token)}`,
    );
  }
  return Number(token);
}

/**
 * One page of `items` (already in the call's order) for a request's `page`, and the PageResponse to send
 * with it. A token past the end gives an empty last page, as a list that shrank between calls would.
 */
export function pageOf<T>(
  items: readonly T[],
  page: unknown,
  field = "page",
): { items: T[]; page: PageResponse } {
  const size = pageSize(page, field);
  const start = pageStart(pageMessage(page, field), field);
  const end = start + size;
  return {
    items: items.slice(start, end),
    page: { next_page_token: end < items.length ? String(end) : "", total_size: items.length },
  };
}
