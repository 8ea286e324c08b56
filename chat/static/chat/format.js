// Text and time as the pages show them. User text becomes text nodes and, for http(s) URLs
// only, links; it is never parsed as HTML.

const clock = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const longDay = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  day: "numeric",
  month: "long",
  year: "numeric",
});
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

// A URL runs to the next space or character that cannot be in one unescaped.
const URL_PATTERN = /\bhttps?:\/\/[^\s<>"'`{}|\\^]+/gi;
// Punctuation that usually ends the sentence around a URL rather than the URL itself.
const TRAILING = /[.,;:!?)\]]$/;

/** "14:05" in the reader's locale. */
export function clockTime(iso) {
  return clock.format(new Date(iso));
}

/** The reader's local calendar day of a moment, as "2026-11-24". */
export function dayKey(iso) {
  const moment = new Date(iso);
  const month = String(moment.getMonth() + 1).padStart(2, "0");
  const day = String(moment.getDate()).padStart(2, "0");
  return `${moment.getFullYear()}-${month}-${day}`;
}

/** "Today", "Yesterday", or the day in full. */
export function dayLabel(iso) {
  const key = dayKey(iso);
  const now = new Date();
  if (key === dayKey(now.toISOString())) {
    return "Today";
  }
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1, 12);
  if (key === dayKey(yesterday.toISOString())) {
    return "Yesterday";
  }
  return longDay.format(new Date(iso));
}

/** "5 minutes ago", "yesterday"… */
export function relativeTime(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const steps = [
    [60, "second"],
    [60, "minute"],
    [24, "hour"],
    [7, "day"],
    [4.35, "week"],
    [12, "month"],
  ];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) {
      return unit === "second" ? "just now" : relative.format(Math.round(value), unit);
    }
    value /= size;
  }
  return relative.format(Math.round(value), "year");
}

function withoutTrailing(candidate) {
  let url = candidate;
  while (TRAILING.test(url)) {
    // A closing bracket the URL opened is its own (https://en.wikipedia.org/wiki/Rust_(film)).
    const last = url.at(-1);
    const opener = { ")": "(", "]": "[" }[last];
    if (opener && url.split(opener).length > url.split(last).length - 1) {
      break;
    }
    url = url.slice(0, -1);
  }
  return url;
}

function link(url) {
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.textContent = url;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer nofollow";
  return anchor;
}

/** The text as nodes: http(s) URLs become links that open elsewhere, the rest stays text. */
export function linkified(text) {
  const fragment = document.createDocumentFragment();
  let from = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const url = withoutTrailing(match[0]);
    let parsed = null;
    try {
      parsed = new URL(url);
    } catch {
      continue;
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      continue;
    }
    fragment.append(text.slice(from, match.index), link(url));
    from = match.index + url.length;
  }
  fragment.append(text.slice(from));
  return fragment;
}
