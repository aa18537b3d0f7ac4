// A running export's page follows it: it polls the API and reloads once the export has ended.
"use strict";

const POLL_MS = 1000;
const state = document.getElementById("export-state");

async function poll() {
  try {
    const response = await fetch(`/api/exports/${state.dataset.exportId}`, { credentials: "same-origin" });
    if (response.ok) {
      const exported = await response.json();
      if (exported.status !== "running") {
        window.location.reload();
        return;
      }
      if (exported.progress) {
        const written = document.getElementById("export-written");
        if (written) written.textContent = `${exported.progress.written}/${exported.progress.total}`;
      }
    }
  } finally {
    window.setTimeout(poll, POLL_MS);
  }
}

if (state && state.dataset.status === "running") window.setTimeout(poll, POLL_MS);
