// The launch form: each catalog list filters as you type, and the item count follows the picks.
"use strict";

const form = document.getElementById("launch-form");

function picked(name) {
  return form.querySelectorAll(`input[name="${name}"]:checked`).length;
}

function recount() {
  const samples = Math.max(0, parseInt(document.getElementById("samples").value, 10) || 0);
  const items = picked("persona") * picked("arc") * picked("topic") * samples;
  document.getElementById("item-count").textContent = `${items} item${items === 1 ? "" : "s"}`;
  for (const id of ["launch-button", "estimate-button"]) document.getElementById(id).disabled = items === 0;
}

for (const picker of document.querySelectorAll("[data-picker]")) {
  picker.querySelector(".picker-search").addEventListener("input", (event) => {
    const wanted = event.target.value.trim().toLowerCase();
    for (const choice of picker.querySelectorAll(".pick")) {
      choice.classList.toggle("hidden", wanted !== "" && !choice.textContent.toLowerCase().includes(wanted));
    }
  });
}

form.addEventListener("input", recount);
form.addEventListener("change", recount);
recount();
