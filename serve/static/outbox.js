// mycolens feedback outbox: a correction given with no network waits on this device (IndexedDB) and goes to
// POST /feedback when the network is back. An item leaves the outbox only when the server has it: stored (202), or
// already there (409 duplicate_claim: an earlier send arrived but its answer was lost), or refused for good (another
// 4xx, which the page reports). HTTP 429 and 5xx keep it for a later try. One tab sends at a time (Web Locks).
// window.mycolensOutbox = {add(species, blob), send(), count()}; each send() ends with a "mycolens-outbox" event.

const DB = "mycolens-outbox";
const STORE = "corrections";
const RETRY_MS = 30_000; // after a 429 or 5xx, while online

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function withStore(mode, fn) {
  const open = indexedDB.open(DB, 1);
  open.onupgradeneeded = () => open.result.createObjectStore(STORE, { keyPath: "id", autoIncrement: true });
  const db = await done(open);
  try {
    const tx = db.transaction(STORE, mode);
    const finished = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
    const result = await done(fn(tx.objectStore(STORE)));
    await finished;
    return result;
  } finally {
    db.close();
  }
}

// queue a correction (the species id and the photo as picked); returns how many wait
export async function add(species, blob) {
  const photo = new Blob([await blob.arrayBuffer()], { type: blob.type || "application/octet-stream" });
  await withStore("readwrite", (s) => s.add({ species, photo, queued_at: new Date().toISOString() }));
  return count();
}

export function count() {
  return withStore("readonly", (s) => s.count());
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return { code: String(body.error.code || ""), message: String(body.error.message || "") };
  } catch (e) {
    return { code: "", message: "HTTP " + response.status };
  }
}

async function sendAll() {
  const report = { sent: 0, already: 0, refused: [], left: 0, offline: false };
  const items = await withStore("readonly", (s) => s.getAll());
  for (const item of items) {
    const data = new FormData();
    data.append("species", item.species);
    data.append("file", item.photo, "photo");
    let response;
    try {
      response = await fetch("/feedback", { method: "POST", body: data });
    } catch (e) {
      report.offline = true;
      break;
    }
    if (response.status === 429 || response.status >= 500) break;
    if (response.ok) {
      report.sent += 1;
    } else {
      const error = await errorOf(response);
      if (error.code === "duplicate_claim") report.already += 1;
      else report.refused.push({ species: item.species, status: response.status, ...error });
    }
    await withStore("readwrite", (s) => s.delete(item.id));
  }
  report.left = await count();
  return report;
}

let retry = null;

// send what waits, oldest first; resolves to {sent, already, refused: [{species, status, code, message}], left, offline}
export async function send() {
  clearTimeout(retry);
  const report = navigator.locks ? await navigator.locks.request(DB, sendAll) : await sendAll();
  if (report.left > 0 && !report.offline) retry = setTimeout(send, RETRY_MS);
  globalThis.dispatchEvent(new CustomEvent("mycolens-outbox", { detail: report }));
  return report;
}

globalThis.addEventListener("online", () => { send().catch(() => { /* tried again on the next event */ }); });
globalThis.mycolensOutbox = { add, send, count };
