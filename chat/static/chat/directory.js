// The rooms directory on the index page: shows the listing the page came with, then asks
// /api/rooms/ again every few seconds while the tab is visible, and at once when it comes back.
// Room names are text (textContent), never HTML.
import { relativeTime } from "./format.js";

const list = document.querySelector("#rooms");
const empty = document.querySelector("#rooms-empty");
let listing = JSON.parse(document.getElementById("rooms-data").textContent);
let timer = null;

function roomItem(room) {
  const item = document.createElement("li");
  item.className = "room-entry";
  item.dataset.room = room.name;
  const link = document.createElement("a");
  link.href = `/chat/${room.name}/`;
  link.className = "room-link";
  link.textContent = `#${room.name}`;
  item.append(link);
  if (room.private) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "private";
    item.append(" ", badge);
  }
  const online = document.createElement("span");
  online.className = "online";
  online.dataset.online = String(room.online);
  online.textContent = room.online === 1 ? "1 online" : `${room.online} online`;
  const last = document.createElement("time");
  last.className = "last";
  last.dateTime = room.last_message;
  last.title = new Date(room.last_message).toLocaleString();
  last.textContent = relativeTime(room.last_message);
  const details = document.createElement("span");
  details.className = "room-details";
  details.append(online, " · ", last);
  item.append(details);
  return item;
}

function render() {
  list.replaceChildren(...listing.rooms.map(roomItem));
  empty.hidden = listing.rooms.length > 0;
  // For tests: how many times the list was drawn, and what it holds.
  document.body.dataset.roomsRendered = String(Number(document.body.dataset.roomsRendered ?? 0) + 1);
  document.body.dataset.rooms = listing.rooms.map((room) => `${room.name}:${room.online}`).join(",");
}

async function refresh() {
  clearTimeout(timer);
  timer = null;
  try {
    const response = await fetch("/api/rooms/", { headers: { Accept: "application/json" } });
    if (response.ok) {
      listing = await response.json();
    }
  } catch {
    // Offline or the server is restarting: keep the last listing and try again later.
  }
  render();
  schedule();
}

function schedule() {
  if (!document.hidden && timer === null) {
    timer = setTimeout(refresh, listing.poll_ms ?? 5000);
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    clearTimeout(timer);
    timer = null;
  } else {
    refresh();
  }
});
render();
schedule();
