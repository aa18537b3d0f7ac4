// The jobs list, kept current: every few seconds the JSON API's numbers replace the row's
// (as text; nothing from the server is ever parsed as markup).
"use strict";

const POLL_MS = 2000;

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const total = Math.floor(seconds);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return hours ? `${hours}h ${pad(minutes)}m` : `${minutes}m ${pad(secs)}s`;
}

function update(row, job) {
  const done = job.completed + job.cancelled;
  const status = row.querySelector('[data-field="status"]');
  status.textContent = job.status;
  status.className = `status status-${job.status}`;
  const progress = row.querySelector('[data-field="progress"]');
  progress.max = job.total;
  progress.value = done;
  row.querySelector('[data-field="counts"]').textContent = `${done}/${job.total}`;
  row.querySelector('[data-field="cost"]').textContent = `$${job.cost_usd.toFixed(4)}`;
  row.querySelector('[data-field="eta"]').textContent = duration(job.eta_seconds);
}

async function poll() {
  try {
    const response = await fetch("/api/jobs", { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign("/login?next=/jobs");
      return;
    }
    if (response.ok) {
      const rows = new Map([...document.querySelectorAll("tr[data-job-id]")].map((row) => [row.dataset.jobId, row]));
      const jobs = await response.json();
      if (jobs.some((job) => !rows.has(job.job_id))) {
        window.location.reload(); // a new job: the page lists it
        return;
      }
      for (const job of jobs) update(rows.get(job.job_id), job);
      document.body.dataset.polled = String(Date.now());
    }
  } finally {
    window.setTimeout(poll, POLL_MS);
  }
}

window.setTimeout(poll, POLL_MS);
