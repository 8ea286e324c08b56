// The room picker: Enter or the button goes to /chat/ROOM/, after checking the name rule.
const rule = JSON.parse(document.getElementById("room-rule").textContent);
const namePattern = new RegExp(`^(?:${rule.pattern})$`);
const input = document.querySelector("#room-name-input");
const submit = document.querySelector("#room-name-submit");
const error = document.querySelector("#room-name-error");

function isValidRoomName(name) {
  return namePattern.test(name) && name !== "." && name !== "..";
}

function showError(text) {
  error.textContent = text;
  error.hidden = !text;
  input.setAttribute("aria-invalid", text ? "true" : "false");
}

function enterRoom() {
  const name = input.value.trim();
  if (!isValidRoomName(name)) {
    showError(name ? `“${name}” is not a room name. ${rule.text}` : "Type a room name first.");
    input.focus();
    return;
  }
  window.location.pathname = `/chat/${name}/`;
}

input.focus();
input.addEventListener("keyup", (event) => {
  if (event.key === "Enter") {
    enterRoom();
  } else if (!error.hidden && isValidRoomName(input.value.trim())) {
    showError("");
  }
});
submit.addEventListener("click", enterRoom);
