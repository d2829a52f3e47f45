// mycolens web page: pick or take a photo, POST /predict, show the verdict; optional feedback (POST /feedback).
// Plain browser JavaScript, no build step, no third-party code. All text goes in via textContent (never HTML).
"use strict";

(function () {
  const TOP_K = 5;
  const SLOW_MS = 10_000; // automatic mode: a server that has not answered by then is "slow"; this device answers
  const $ = (id) => document.getElementById(id);
  const VERDICTS = {
    edible: {
      icon: "\u2713",
      label: "Verdict: edible species",
      text: "The model is confident this is an edible species and sees little chance of a poisonous one. " +
        "Still do not eat it until a trained person has checked the mushroom itself.",
    },
    do_not_eat: {
      icon: "\u2715",
      label: "Verdict: DO NOT EAT",
      text: "A poisonous or deadly species is likely.",
    },
    uncertain: {
      icon: "?",
      label: "Verdict: uncertain \u2014 do not eat",
      text: "The model cannot tell with enough confidence, or the photo looks unlike the photos it learned from. " +
        "Treat the mushroom as not edible.",
    },
  };
  // why an answer abstained (the "abstain_reason" of POST /predict)
  const REASONS = {
    greyscale: "The photo has no colour. Colour tells these species apart: take a colour photo.",
    not_a_photo: "This looks like a drawing, text or a pattern, not a photo of a mushroom.",
    bad_exposure: "The photo is too dark or too bright to judge.",
    blurry: "The photo is too blurry to judge.",
    unlike_training_data: "This photo looks unlike the mushroom photos the model learned from.",
    low_confidence: "The model cannot tell the species with enough confidence.",
  };
  const EDIBILITY = {
    edible: { icon: "\u2713", word: "edible" },
    poisonous: { icon: "\u26A0", word: "poisonous" },
    deadly: { icon: "\u2620", word: "deadly" },
  };
  const ERRORS = {
    too_large: "The photo is too large. Send a smaller photo (or a lower camera resolution).",
    not_image: "This file is not a photo the server can read. Send a JPEG, PNG or WebP image.",
    unsupported: "This image type is not supported. Send a JPEG, PNG or WebP image.",
    truncated: "The photo seems damaged or cut off. Try taking or saving it again.",
    empty: "The file is empty. Choose the photo again.",
    too_small: "The photo is too small to recognise anything. Send a larger photo.",
  };

  let species = {}; // id -> {common_name, scientific_name, edibility}
  let currentFile = null;
  let feedbackEnabled = false;
  let asked = 0; // photos asked about so far

  function percent(p) {
    const v = 100 * Number(p);
    if (v > 0 && v < 0.1) return "<0.1%";
    return (v >= 99.95 && v < 100 ? "99.9" : v.toFixed(1)) + "%";
  }

  function nameOf(id) {
    const s = species[id];
    return s ? s.common_name : id;
  }

  function edibilityBadge(value) {
    const e = EDIBILITY[value] || { icon: "", word: value || "unknown" };
    const span = document.createElement("span");
    span.className = "badge badge-" + (EDIBILITY[value] ? value : "unknown");
    const icon = document.createElement("span");
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = e.icon + " ";
    span.append(icon, document.createTextNode(e.word));
    return span;
  }

  async function errorText(response) {
    let code = "";
    let message = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = String(body.error.code || "");
        message = String(body.error.message || "");
      } else if (body && body.detail) {
        message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (e) {
      message = response.statusText || "";
    }
    const friendly = ERRORS[code] || (response.status === 413 ? ERRORS.too_large : "");
    const parts = [];
    if (friendly) parts.push(friendly);
    if (message) parts.push("(Server said: " + message + ")");
    if (!parts.length) parts.push("The server answered with an error (HTTP " + response.status + ").");
    return parts.join(" ");
  }

  function showError(text) {
    $("error-message").textContent = text;
    $("error").hidden = false;
  }

  function clearMessages() {
    $("error").hidden = true;
    $("error-message").textContent = "";
    $("status").textContent = "";
  }

  function showPreview(file) {
    const img = $("preview");
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    const url = URL.createObjectURL(file);
    img.dataset.url = url;
    img.src = url;
    img.alt = "Your photo";
    $("preview-caption").textContent = file.name ? "Your photo: " + file.name : "Your photo";
    $("preview-box").hidden = false;
  }

  function render(answer) {
    const v = VERDICTS[answer.verdict] || VERDICTS.uncertain;
    const box = $("verdict");
    box.dataset.verdict = VERDICTS[answer.verdict] ? answer.verdict : "uncertain";
    $("verdict-icon").textContent = v.icon;
    $("verdict-label").textContent = v.label;
    $("verdict-text").textContent = v.text;
    const reason = $("verdict-reason");
    reason.textContent = answer.abstain_reason ? (REASONS[answer.abstain_reason] || answer.abstain_reason) : "";
    reason.dataset.reason = answer.abstain_reason || "";
    reason.hidden = !answer.abstain_reason;

    const s = species[answer.species] || {};
    $("common-name").textContent = answer.common_name || nameOf(answer.species);
    $("common-name").dataset.species = answer.species;
    $("scientific-name").textContent = s.scientific_name ? "(" + s.scientific_name + ")" : "(" + answer.species + ")";
    const ed = $("species-edibility");
    ed.replaceChildren(edibilityBadge(answer.edibility));

    $("confidence").textContent = percent(answer.confidence);
    $("confidence-meter").value = Number(answer.confidence) || 0;
    $("poison").textContent = percent(answer.poisonous_probability);

    const looks = answer.lookalikes || [];
    const list = $("lookalikes-list");
    list.replaceChildren();
    for (const l of looks) {
      const li = document.createElement("li");
      const strong = document.createElement("strong");
      strong.textContent = l.common_name || nameOf(l.species);
      li.append("Can be confused with ", strong, " ", edibilityBadge(l.edibility));
      if (l.note) {
        const note = document.createElement("span");
        note.className = "note";
        note.textContent = " " + l.note;
        li.append(note);
      }
      list.append(li);
    }
    $("lookalikes").hidden = looks.length === 0;

    const body = $("topk-body");
    body.replaceChildren();
    for (const t of answer.top_k || []) {
      const tr = document.createElement("tr");
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = nameOf(t.species);
      const sci = species[t.species] && species[t.species].scientific_name;
      if (sci) {
        const em = document.createElement("em");
        em.className = "sci";
        em.textContent = " " + sci;
        name.append(em);
      }
      const prob = document.createElement("td");
      prob.textContent = percent(t.probability);
      const edib = document.createElement("td");
      edib.append(edibilityBadge(t.edibility));
      tr.append(name, prob, edib);
      body.append(tr);
    }
    $("topk-n").textContent = String((answer.top_k || []).length);
    const m = answer.model || {};
    $("model-line").textContent = "Model " + (m.name || "?") + " " + (m.version || "") + " (" + (m.variant || "?") + ")";

    $("result").hidden = false;
    $("result-title").focus();
    if (feedbackEnabled) {
      $("feedback").hidden = false;
      $("feedback-status").textContent = "";
    }
  }

  // who answers: "auto" (the server; this device when the server cannot be reached), "device" or "server"
  function answerMode() {
    const v = $("answer-mode").value;
    return v === "device" || v === "server" ? v : "auto";
  }

  function showSource(answer) {
    const line = $("answer-source");
    const device = answer.source === "device";
    line.dataset.source = device ? "device" : "server";
    line.dataset.modelSha256 = answer.model_sha256 || "";
    const update = (answer.model_update || {}).status || "";
    line.dataset.modelUpdate = update;
    if (!device) {
      line.textContent = "Answered by the server";
      return;
    }
    const m = answer.model || {};
    let text = "Answered on this device, with no server (model " + (m.version || "?") + ", model.json " +
      String(answer.model_sha256 || "").slice(0, 12) + ")";
    if (update === "offline") text += ": the model kept on this device since the last visit online";
    if (update === "refused") {
      text += ": the server's model could not be verified, so the model kept on this device answered (" +
        String((answer.model_update || {}).problem || "") + ")";
    }
    line.textContent = text;
  }

  // the on-device answer (serve/static/field.js); errors read as the server's do
  async function identifyOnDevice(file) {
    if (!window.mycolensField) {
      showError("This browser cannot answer on the device, and the server could not be reached.");
      return null;
    }
    $("status").textContent = "Looking at the photo on this device\u2026";
    try {
      const answer = await window.mycolensField.answer(file, TOP_K);
      if (!Object.keys(species).length) fillSpecies((await window.mycolensField.info()).classes);
      return answer;
    } catch (e) {
      const friendly = ERRORS[e && e.code] || "";
      const message = e && e.message ? String(e.message) : String(e);
      showError(friendly ? friendly + " (" + message + ")" : "Could not answer on this device: " + message);
      return null;
    }
  }

  async function identify(file) {
    clearMessages();
    $("result").hidden = true;
    $("feedback").hidden = true;
    currentFile = file;
    const ticket = ++asked; // a slower answer for an earlier photo never replaces this one's
    showPreview(file);
    const mode = answerMode();
    let answer = null;
    if (mode === "device" || (mode === "auto" && navigator.onLine === false)) {
      answer = await identifyOnDevice(file);
    } else {
      $("status").textContent = "Looking at the photo\u2026";
      const data = new FormData();
      data.append("file", file, "photo");
      let response = null;
      const slow = new AbortController();
      const timer = mode === "auto" && window.mycolensField ? setTimeout(() => slow.abort(), SLOW_MS) : null;
      try {
        response = await fetch("/predict?top_k=" + TOP_K, { method: "POST", body: data, signal: slow.signal });
      } catch (e) {
        if (mode === "server") {
          $("status").textContent = "";
          showError("Could not reach the server. Check the connection and try again.");
          return;
        }
      }
      clearTimeout(timer);
      if (ticket !== asked) return;
      const down = response !== null && mode === "auto" && [502, 503, 504].includes(response.status);
      if (response === null || down) {
        answer = await identifyOnDevice(file);
      } else if (!response.ok) {
        $("status").textContent = "";
        showError(await errorText(response));
        return;
      } else {
        answer = await response.json();
      }
    }
    if (ticket !== asked) return;
    if (answer === null) {
      $("status").textContent = "";
      return;
    }
    $("status").textContent = "Done.";
    render(answer);
    showSource(answer);
  }

  function onPick(event) {
    const file = event.target.files && event.target.files[0];
    if (file) identify(file);
    event.target.value = ""; // picking the same file again still fires change
  }

  async function sendFeedback(event) {
    event.preventDefault();
    const status = $("feedback-status");
    const chosen = $("feedback-species").value;
    if (!currentFile) {
      status.textContent = "Take or choose a photo first.";
      return;
    }
    if (!chosen) {
      status.textContent = "Choose the species the mushroom really was.";
      $("feedback-species").focus();
      return;
    }
    if (!$("feedback-consent").checked) {
      status.textContent = "Tick the box to agree that the photo is stored, or leave this part out.";
      $("feedback-consent").focus();
      return;
    }
    if (navigator.onLine === false) {
      await queueFeedback(chosen, currentFile);
      return;
    }
    const data = new FormData();
    data.append("species", chosen);
    data.append("file", currentFile, "photo");
    status.textContent = "Sending\u2026";
    let response;
    try {
      response = await fetch("/feedback", { method: "POST", body: data });
    } catch (e) {
      await queueFeedback(chosen, currentFile);
      return;
    }
    if (!response.ok) {
      status.textContent = "Not stored: " + (await errorText(response));
      return;
    }
    const body = await response.json();
    status.textContent = "Thank you. Your correction (" + nameOf(body.species) +
      ") waits for a reviewer; only reviewed corrections train a future model.";
    $("feedback-consent").checked = false;
  }

  // no network: the correction waits on this device (serve/static/outbox.js) and is sent when the network is back
  async function queueFeedback(chosen, file) {
    const status = $("feedback-status");
    if (!window.mycolensOutbox) {
      status.textContent = "Could not reach the server; nothing was stored.";
      return;
    }
    try {
      const waiting = await window.mycolensOutbox.add(chosen, file);
      status.textContent = "No network: your correction (" + nameOf(chosen) + ") is kept on this device and is " +
        "sent when the network is back (" + waiting + " waiting).";
      $("feedback-consent").checked = false;
      showOutbox(waiting);
    } catch (e) {
      status.textContent = "Could not reach the server, and this browser could not keep the correction: nothing was stored.";
    }
  }

  function showOutbox(waiting, report) {
    const line = $("outbox-status");
    const parts = [];
    if (report && report.sent + report.already > 0) {
      parts.push((report.sent + report.already) + " correction(s) kept on this device reached the server");
    }
    if (report && report.refused.length) {
      parts.push(report.refused.length + " kept correction(s) were refused: " +
        report.refused.map((r) => nameOf(r.species) + " (" + (r.message || r.code) + ")").join("; "));
    }
    if (waiting > 0) parts.push(waiting + " correction(s) wait on this device for the network");
    line.textContent = parts.join(". ") + (parts.length ? "." : "");
    line.dataset.waiting = String(waiting);
    line.hidden = parts.length === 0;
  }

  function fillSpecies(list) {
    species = {};
    for (const s of list) species[s.id] = s;
    const select = $("feedback-species");
    select.replaceChildren();
    const empty = document.createElement("option");
    empty.value = "";
    empty.textContent = "Choose a species\u2026";
    select.append(empty);
    const sorted = list.slice().sort((a, b) => a.common_name.localeCompare(b.common_name));
    for (const s of sorted) {
      const o = document.createElement("option");
      o.value = s.id;
      o.textContent = s.common_name + " (" + s.scientific_name + ") \u2014 " + s.edibility;
      select.append(o);
    }
  }

  async function loadSpecies() {
    try {
      const r = await fetch("/feedback");
      if (r.ok) {
        const body = await r.json();
        fillSpecies(body.species || []);
        feedbackEnabled = Boolean(body.enabled);
        return;
      }
    } catch (e) { /* fall through to /model */ }
    try {
      const r = await fetch("/model");
      if (r.ok) {
        const body = await r.json();
        const classes = body.classes || [];
        fillSpecies(classes.map((c) => ({ id: c.id, common_name: c.common_name, scientific_name: c.scientific_name, edibility: c.edibility })));
      }
    } catch (e) { /* names fall back to ids */ }
  }

  $("preview").addEventListener("error", () => { $("preview-box").hidden = true; }); // not a picture the browser shows
  $("camera").addEventListener("change", onPick);
  $("file").addEventListener("change", onPick);
  $("feedback-form").addEventListener("submit", sendFeedback);
  $("photo-form").addEventListener("submit", (e) => e.preventDefault());
  const MODE_KEY = "mycolens.answer-mode";
  try {
    $("answer-mode").value = localStorage.getItem(MODE_KEY) || "auto";
  } catch (e) { /* storage off: automatic */ }
  $("answer-mode").addEventListener("change", () => {
    try { localStorage.setItem(MODE_KEY, answerMode()); } catch (e) { /* not kept */ }
  });
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => { /* no offline copy */ });
  }
  loadSpecies();
  window.addEventListener("mycolens-outbox", (e) => showOutbox(e.detail.left, e.detail));
  window.addEventListener("load", () => {
    // an online visit fetches the served model for answers with no network (or keeps the verified one), and sends
    // the corrections that waited on this device
    if (window.mycolensField) window.mycolensField.load().catch(() => { /* the device answers only when asked */ });
    const outbox = window.mycolensOutbox;
    if (outbox && navigator.onLine !== false) outbox.send().catch(() => { /* next time */ });
    else if (outbox) outbox.count().then((n) => showOutbox(n), () => { /* no storage */ });
  });
})();
