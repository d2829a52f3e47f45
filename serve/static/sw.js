// mycolens service worker (served at /sw.js, scope /): keeps the page, its scripts, ONNX Runtime Web and the served
// model in the Cache Storage so the page opens and answers on the device with no network.
// Network first for everything it keeps (a fresh copy replaces the kept one); the kept copy when the network fails.
// The model file and its model.json are kept together: field.js refuses an ONNX file whose sha256 differs from
// model.json's, so a half-updated pair is never run.
"use strict";

const CACHE = "mycolens-field-v1";
const SHELL = [
  "/",
  "/static/app.js",
  "/static/field.js",
  "/static/style.css",
  "/static/manifest.webmanifest",
  "/static/icon.svg",
  "/field/ort/ort.wasm.min.mjs",
  "/field/ort/ort-wasm-simd-threaded.mjs",
  "/field/ort/ort-wasm-simd-threaded.wasm",
];

function kept(url) {
  return url.origin === self.location.origin &&
    (SHELL.includes(url.pathname) || url.pathname === "/field/model.json" || url.pathname.startsWith("/field/model/"));
}

// the model.json and the ONNX file of the variant the server runs (X-Mycolens-Variant), verified by hash
async function keepModel(cache) {
  const meta = await fetch("/field/model.json", { cache: "no-cache" });
  if (!meta.ok) throw new Error("/field/model.json answered HTTP " + meta.status);
  const variant = meta.headers.get("X-Mycolens-Variant") || "int8";
  const model = await fetch("/field/model/" + variant, { cache: "no-cache" });
  if (!model.ok) throw new Error("/field/model/" + variant + " answered HTTP " + model.status);
  await cache.put("/field/model.json", meta);
  await cache.put("/field/model/" + variant, model);
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL.map((u) => new Request(u, { cache: "no-cache" })));
    await keepModel(cache);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
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
