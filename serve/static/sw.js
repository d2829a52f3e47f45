// mycolens service worker (served at /sw.js, scope /): keeps the page, its scripts, ONNX Runtime Web and the
// species list (GET /feedback) in the Cache Storage so the page opens, answers on the device and takes feedback with
// no network. Network first for everything it keeps (a fresh copy replaces the kept one); the kept copy when the
// network fails. The model is not kept here: field.js keeps the last verified model.json + ONNX pair itself (cache
// "mycolens-field-model"), so a half-updated pair is never run.
"use strict";

const CACHE = "mycolens-field-v2";
const MODEL_STORE = "mycolens-field-model"; // field.js's own
const SHELL = [
  "/",
  "/static/app.js",
  "/static/field.js",
  "/static/outbox.js",
  "/static/style.css",
  "/static/manifest.webmanifest",
  "/static/icon.svg",
  "/field/ort/ort.wasm.min.mjs",
  "/field/ort/ort-wasm-simd-threaded.mjs",
  "/field/ort/ort-wasm-simd-threaded.wasm",
];

function kept(url) {
  return url.origin === self.location.origin && (SHELL.includes(url.pathname) || url.pathname === "/feedback");
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL.map((u) => new Request(u, { cache: "no-cache" })));
    const species = await fetch("/feedback", { cache: "no-cache" }).catch(() => null); // the form's species list
    if (species && species.ok) await cache.put("/feedback", species);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE && name !== MODEL_STORE) await caches.delete(name);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (!kept(url)) return;
  const key = url.pathname === "/" ? "/" : url.pathname;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const fresh = await fetch(request);
      if (fresh.ok) await cache.put(key, fresh.clone());
      else if (fresh.status === 304) return (await cache.match(key)) || fresh;
      return fresh;
    } catch (e) {
      const copy = await cache.match(key);
      if (copy) return copy;
      throw e;
    }
  })());
});
