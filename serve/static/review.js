// mycolens review page: list pending claims (GET /review/claims), show one at a time with its photo, the model's
// answer and look-alike notes, and log approve / reject (POST /review/claims/{id}). Keys: a, r, j, k.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let claims = [];
  let index = 0;
  let photoUrl = null;
  let busy = false;

  function token() { return sessionStorage.getItem("mycolens-review-token") || ""; }
  function reviewer() { return localStorage.getItem("mycolens-reviewer") || ""; }
  function headers(extra) { return Object.assign({ Authorization: "Bearer " + token() }, extra || {}); }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error.message || body.error.code || String(response.status);
    } catch (e) { /* not JSON */ }
    return "HTTP " + response.status;
  }

  function speciesLine(card) {
    if (!card) return "\u2014";
    const name = card.common_name ? card.common_name + " (" + card.scientific_name + ")" : card.id;
    return name + (card.edibility ? " \u2014 " + card.edibility : "");
  }

  function item(text, cls) {
    const li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls;
    return li;
  }

  async function loadClaims() {
    const status = $("login-status");
    status.textContent = "Loading\u2026";
    let response;
    try {
      response = await fetch("/review/claims?status=pending", { headers: headers(), cache: "no-store" });
    } catch (e) {
      status.textContent = "Could not reach the server.";
      return;
    }
    if (!response.ok) {
      claims = []; // a refused token shows nothing, not the claims an earlier token loaded
      $("claim").hidden = true;
      $("empty").hidden = true;
      $("photo").removeAttribute("src");
      status.textContent = "Not loaded: " + (await errorText(response));
      return;
    }
    const body = await response.json();
    claims = body.claims || [];
    index = 0;
    await show();
    if (claims.length) $("claim-title").focus(); // out of the token field, so the a / r / j / k keys work
    // said last: once it shows, the claim is on screen and the keys work
    status.textContent = claims.length + " pending claim(s); " + body.reviewers_required +
      " distinct approval(s) needed for each.";
  }

  async function show() {
    $("decide-status").textContent = "";
    if (!claims.length) {
      $("claim").hidden = true;
      $("empty").hidden = false;
      return;
    }
    $("empty").hidden = true;
    $("claim").hidden = false;
    index = Math.max(0, Math.min(index, claims.length - 1));
    const c = claims[index];
    $("position").textContent = (index + 1) + " of " + claims.length;
    $("claim-id").textContent = c.claim_id;
    $("claimed").textContent = speciesLine(c.claimed);
    const a = c.answer;
    const model = c.model ? c.model.name + " " + c.model.version + " (" + c.model.variant + ")" : "unknown model";
    $("model-answer").textContent = a
      ? speciesLine(c.model_species) + ", verdict " + a.verdict + ", confidence " +
        Number(a.confidence).toFixed(2) + (c.model_abstained ? " \u2014 the model abstained" +
        (a.abstain_reason ? " (" + a.abstain_reason + ")" : "") : "") + "; " + model
      : "no answer stored";
    $("model-answer").classList.toggle("flag", Boolean(c.model_abstained));
    const top = $("top-k");
    top.replaceChildren();
    for (const t of (a && a.top_k) || []) {
      top.append(item(t.species + " " + (100 * t.probability).toFixed(1) + "% (" + t.edibility + ")"));
    }
    $("provenance").textContent = "received " + c.created + ", client " + c.client + " (" + c.client_claims +
      " claim(s) in the queue from this client), photo sha256 " + c.photo_sha256.slice(0, 16) + "\u2026";
    const decided = (c.decisions || []).map((d) => d.reviewer + ": " + d.decision + (d.note ? " (" + d.note + ")" : ""));
    $("decisions").textContent = decided.length ? decided.join("; ") : "none";
    const list = $("lookalikes");
    list.replaceChildren();
    const seen = new Set();
    for (const card of [c.claimed, c.model_species]) {
      if (!card) continue;
      if (card.note && !seen.has(card.id)) {
        seen.add(card.id);
        list.append(item(speciesLine(card) + ": " + card.note));
      }
      for (const l of card.lookalikes || []) {
        if (seen.has(l.id)) continue;
        seen.add(l.id);
        list.append(item(l.common_name + " \u2014 " + l.edibility + ": " + l.note, "note"));
      }
    }
    $("lookalikes-box").hidden = !list.children.length;
    const img = $("photo");
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = null;
    img.removeAttribute("src");
    try {
      const r = await fetch(c.photo_url, { headers: headers(), cache: "no-store" });
      if (r.ok && claims[index] === c) {
        photoUrl = URL.createObjectURL(await r.blob());
        img.src = photoUrl;
      }
    } catch (e) { /* the facts still show */ }
  }

  async function decide(decision) {
    if (busy || !claims.length) return;
    const c = claims[index];
    const status = $("decide-status");
    busy = true;
    status.textContent = "Saving\u2026";
    try {
      const r = await fetch("/review/claims/" + encodeURIComponent(c.claim_id), {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ decision: decision, note: $("note").value, reviewer: reviewer() }),
      });
      if (!r.ok) {
        status.textContent = "Not saved: " + (await errorText(r));
        return;
      }
      const body = await r.json();
      claims.splice(index, 1); // decided by this reviewer: off this list (pending ones wait for others)
      $("note").value = "";
      await show();
      const done = decision === "approve" ? "approved" : "rejected";
      $("decide-status").textContent = c.claim_id + " " + done + " by you; its status is now " + body.status +
        " (" + body.approved_by.length + "/" + body.reviewers_required + " approvals).";
    } catch (e) {
      status.textContent = "Could not reach the server; nothing was saved.";
    } finally {
      busy = false;
    }
  }

  function move(step) {
    if (!claims.length) return;
    index = (index + step + claims.length) % claims.length;
    show();
  }

  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem("mycolens-reviewer", $("reviewer").value.trim());
    sessionStorage.setItem("mycolens-review-token", $("token").value);
    loadClaims();
  });
  $("approve").addEventListener("click", () => decide("approve"));
  $("reject").addEventListener("click", () => decide("reject"));
  $("next").addEventListener("click", () => move(1));
  $("prev").addEventListener("click", () => move(-1));
  $("reload").addEventListener("click", (e) => { e.preventDefault(); loadClaims(); });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    const action = { a: () => decide("approve"), r: () => decide("reject"), j: () => move(1), k: () => move(-1) }[e.key];
    if (action) {
      e.preventDefault();
      action();
    }
  });
  $("reviewer").value = reviewer();
  if (token()) loadClaims();
})();
