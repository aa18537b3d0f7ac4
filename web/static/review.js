// Review by keyboard: a approve, r reject (asks for a reason), j/k next/previous, u undo.
// The keys press the page's own buttons and links; nothing here builds markup.
"use strict";

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName));
}

function submit(id) {
  const form = document.getElementById(id);
  if (form) form.requestSubmit();
}

function follow(id) {
  const link = document.getElementById(id);
  if (link) window.location.assign(link.href);
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
  const actions = {
    a: () => submit("approve-form"),
    r: () => {
      const reason = document.getElementById("reject-reason");
      if (reason) reason.focus();
    },
    j: () => follow("next"),
    k: () => follow("previous"),
    u: () => submit("undo-form"),
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});

// Says the keys work: a test (or a person's script) waits for it rather than for time.
document.documentElement.dataset.keys = "ready";
