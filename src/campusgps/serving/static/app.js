/* campusgps web page: pick/drop a photo -> POST v1/locate -> show the answer on an offline map.
   No network beyond this server: Leaflet is vendored, the basemap is drawn from the model's own
   reference-photo positions (GET v1/model). An optional tile layer comes from `campusgps serve --tiles`. */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const els = {
    file: $("file"), drop: $("drop"), status: $("status"), error: $("error"),
    photoCard: $("photo-card"), photo: $("photo"), photoName: $("photo-name"),
    result: $("result"), lat: $("result-lat"), lon: $("result-lon"), radius: $("result-radius"),
    time: $("result-time"), flags: $("result-flags"), copy: $("copy"),
    nbCard: $("neighbors-card"), nbList: $("neighbors"), badge: $("model-badge"), mapEmpty: $("map-empty"),
    confidence: $("result-confidence"), altBox: $("result-alternatives"), altList: $("alternatives-list"),
  };
  const LOW_CONFIDENCE = 0.5;            // below this the page says "not sure"
  const ALT_NAMES = ["B", "C", "D"];     // the answer is place A
  const api = { cg: { lastResult: null, model: null, state: "loading" } };
  window.campusgps = api.cg;

  // ---------------------------------------------------------------- map
  const map = L.map("map", { zoomControl: true, maxZoom: 22, zoomSnap: 0.25, attributionControl: true });
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  L.control.scale({ imperial: false, maxWidth: 160 }).addTo(map);
  const canvas = L.canvas({ padding: 0.3 });
  const refLayer = L.layerGroup().addTo(map);
  const resultLayer = L.layerGroup().addTo(map);
  let areaBounds = null;
  let objectUrl = null;

  const legend = L.control({ position: "bottomleft" });
  legend.onAdd = function () {
    const d = L.DomUtil.create("div", "legend");
    d.innerHTML =
      '<div><i class="ref"></i>reference photos</div>' +
      '<div><i class="area"></i>mapped area</div>' +
      '<div><i class="circ"></i>predicted position (90% circle)</div>' +
      '<div><i class="nb"></i>nearest reference photos</div>' +
      '<div><i class="alt"></i>other possible places (B, C)</div>';
    return d;
  };
  legend.addTo(map);

  function drawBasemap(model) {
    const ref = model.reference || {};
    const server = model.server || {};
    if (server.tiles_url) {
      L.tileLayer(server.tiles_url, { maxZoom: 22, maxNativeZoom: 19,
        attribution: server.tiles_attribution || "" }).addTo(map);
    }
    if (ref.available && ref.lat.length) {
      if (ref.hull && ref.hull.length >= 3) {
        L.polygon(ref.hull, { color: "#2563eb", weight: 1.5, dashArray: "6 5", fillColor: "#2563eb",
          fillOpacity: 0.06, interactive: false, className: "cg-area" }).addTo(refLayer);
      }
      for (let i = 0; i < ref.lat.length; i++) {
        L.circleMarker([ref.lat[i], ref.lon[i]], { renderer: canvas, radius: 2.5, stroke: false,
          fillColor: "#64748b", fillOpacity: 0.75, interactive: false }).addTo(refLayer);
      }
      const pts = ref.hull && ref.hull.length ? ref.hull : ref.lat.map((la, i) => [la, ref.lon[i]]);
      areaBounds = L.latLngBounds(pts);
      map.fitBounds(areaBounds.pad(0.08), { animate: false });
    } else {
      els.mapEmpty.hidden = false;
      const o = model.origin || { lat: 0, lon: 0 };
      map.setView([o.lat, o.lon], 17);
    }
  }

  // ---------------------------------------------------------------- helpers
  function haversine(a, b) {
    const R = 6371008.8, r = Math.PI / 180;
    const dlat = (b[0] - a[0]) * r, dlon = (b[1] - a[1]) * r;
    const h = Math.sin(dlat / 2) ** 2 + Math.cos(a[0] * r) * Math.cos(b[0] * r) * Math.sin(dlon / 2) ** 2;
    return 2 * R * Math.asin(Math.min(1, Math.sqrt(h)));
  }
  function fmtMeters(m) { return m >= 1000 ? (m / 1000).toFixed(2) + " km" : Math.round(m) + " m"; }
  function setValue(el, value, text) { el.dataset.value = String(value); el.textContent = text; }
  function showError(msg) { els.error.textContent = msg; els.error.hidden = !msg; }
  function setStatus(msg) { els.status.textContent = msg || ""; }
  function setState(s) { api.cg.state = s; document.body.dataset.state = s; document.body.classList.toggle("busy", s === "locating"); }

  // ---------------------------------------------------------------- confidence
  function pct(p) { return Math.round(100 * p) + "%"; }

  // One plain sentence: "confident (87%)", or "not sure: one of 3 places" when confidence is low.
  function confidenceSentence(r) {
    const c = r.confidence, n = 1 + (r.alternatives || []).length;
    if (c == null) return null;
    if (c >= LOW_CONFIDENCE) return { text: "Confident (" + pct(c) + ")", low: false };
    if (n > 1) return { text: "Not sure: one of " + n + " places", detail: "place A " + pct(c), low: true };
    return { text: "Not sure (" + pct(c) + ")", low: true };
  }

  function showConfidence(r) {
    const s = confidenceSentence(r);
    els.confidence.hidden = !s;
    els.confidence.innerHTML = "";
    if (!s) return;
    els.confidence.dataset.value = String(r.confidence);
    els.confidence.classList.toggle("low", s.low);
    const b = document.createElement("span"); b.className = "sentence"; b.textContent = s.text;
    els.confidence.appendChild(b);
    if (s.detail) {
      const d = document.createElement("span"); d.className = "detail"; d.textContent = " · " + s.detail;
      els.confidence.appendChild(d);
    }
    els.confidence.title = "probability that the photo was taken within 20 m of the answer: " + pct(r.confidence);
  }

  // Alternatives: smaller dashed circles labelled B, C on the map, and a list under the answer.
  function drawAlternatives(r, here) {
    const alts = (r.alternatives || []).filter((a) => a.lat != null && a.lon != null);
    els.altList.innerHTML = "";
    els.altBox.hidden = alts.length === 0;
    alts.forEach((a, i) => {
      const name = ALT_NAMES[i] || String(i + 2), at = [a.lat, a.lon];
      const label = name + (a.probability != null ? " · " + pct(a.probability) : "");
      if (a.radius_m != null) {
        L.circle(at, { radius: a.radius_m, color: "#7c3aed", weight: 1.5, dashArray: "5 4", fillColor: "#7c3aed",
          fillOpacity: 0.08, interactive: false, className: "cg-alternative-area" }).addTo(resultLayer);
      }
      const m = L.circleMarker(at, { radius: 8, color: "#fff", weight: 2, fillColor: "#7c3aed", fillOpacity: 1,
        className: "cg-alternative" }).addTo(resultLayer);
      m.bindTooltip(label, { permanent: true, direction: "top", className: "alt-label", offset: [0, -8] });
      const li = document.createElement("li");
      li.dataset.lat = String(a.lat); li.dataset.lon = String(a.lon);
      li.textContent = label + " · " + fmtMeters(haversine(here, at)) + " away";
      li.title = a.lat.toFixed(6) + ", " + a.lon.toFixed(6) +
        (a.radius_m != null ? " ± " + Math.round(a.radius_m) + " m" : "");
      li.addEventListener("click", () => { map.panTo(at); m.openTooltip(); });
      els.altList.appendChild(li);
    });
    return alts;
  }

  // ---------------------------------------------------------------- locating
  async function locate(file) {
    if (!file) return;
    showError("");
    setState("locating");
    setStatus("Locating " + (file.name || "photo") + " …");
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(file);
    els.photo.onerror = () => { els.photo.removeAttribute("src"); els.photo.alt = "(no preview for this format)"; };
    els.photo.src = objectUrl;
    els.photoName.textContent = (file.name || "photo") + " · " + (file.size / 1024).toFixed(0) + " KB";
    els.photoCard.hidden = false;

    const form = new FormData();
    form.append("image", file, file.name || "photo.jpg");
    const t0 = performance.now();
    let res, body;
    try {
      res = await fetch("v1/locate", { method: "POST", body: form });
      body = await res.json().catch(() => ({ error: "the server answered " + res.status + " without JSON" }));
    } catch (e) {
      setState("error"); setStatus("");
      showError("Could not reach the server: " + e.message);
      return;
    }
    const roundTrip = performance.now() - t0;
    if (!res.ok) {
      setState("error"); setStatus("");
      els.result.hidden = true; els.nbCard.hidden = true; resultLayer.clearLayers();
      showError((body && body.error) || ("request failed with status " + res.status));
      return;
    }
    api.cg.lastResult = body;
    showResult(body, roundTrip);
    setStatus("");
    setState("done");
  }

  function showResult(r, roundTrip) {
    setValue(els.lat, r.lat, r.lat.toFixed(6));
    setValue(els.lon, r.lon, r.lon.toFixed(6));
    setValue(els.radius, r.radius_m, r.radius_m == null ? "?" : (r.radius_m < 10 ? r.radius_m.toFixed(1) : Math.round(r.radius_m)));
    setValue(els.time, r.elapsed_ms, Math.round(r.elapsed_ms));
    els.time.title = "server " + r.elapsed_ms.toFixed(1) + " ms, round trip " + roundTrip.toFixed(0) + " ms";
    els.flags.innerHTML = "";
    (r.flags || []).forEach((f) => {
      const s = document.createElement("span"); s.className = "flag"; s.textContent = f.replace(/_/g, " ");
      els.flags.appendChild(s);
    });
    if (r.exif_distance_m != null) {  // the photo carries its own GPS: say how far the answer is from it
      const s = document.createElement("div"); s.id = "result-exif"; s.style.flexBasis = "100%";
      const fl = r.flags || [];
      s.textContent = "The photo's own GPS is " + Math.round(r.exif_distance_m) + " m from this answer" +
        (fl.includes("exif_outside_area") ? ", outside the mapped area" : "") +
        (fl.includes("exif_disagrees") ? " (outside the circle: they disagree)." : " (inside the circle).");
      els.flags.appendChild(s);
    }
    showConfidence(r);
    els.result.hidden = false;

    const here = [r.lat, r.lon];
    resultLayer.clearLayers();
    const alts = drawAlternatives(r, here);
    const nbs = (r.neighbors || []).filter((n) => n.lat != null && n.lon != null);
    const nbMarkers = [];
    nbs.forEach((n, i) => {
      L.polyline([here, [n.lat, n.lon]], { color: "#ea580c", weight: 1, opacity: 0.5, dashArray: "3 4",
        interactive: false }).addTo(resultLayer);
      const m = L.circleMarker([n.lat, n.lon], { radius: 7, color: "#fff", weight: 2, fillColor: "#ea580c",
        fillOpacity: 1, className: "cg-neighbor" }).addTo(resultLayer);
      m.bindTooltip(String(i + 1), { permanent: true, direction: "right", className: "nb-label", offset: [6, 0] });
      nbMarkers.push(m);
    });
    if (r.radius_m != null) {
      L.circle(here, { radius: r.radius_m, color: "#2563eb", weight: 2, fillColor: "#2563eb", fillOpacity: 0.15,
        className: "cg-uncertainty" }).addTo(resultLayer);
    }
    const icon = new L.Icon.Default({ className: "cg-pred-marker" });
    const answer = L.marker(here, { icon: icon, title: "predicted position", zIndexOffset: 1000 }).addTo(resultLayer);
    if (alts.length && r.confidence != null) {  // name the answer A when there are other places to tell apart
      answer.bindTooltip("A · " + pct(r.confidence), { permanent: true, direction: "right", className: "answer-label" });
    }
    answer.bindPopup("<b>Predicted position</b><br>" + r.lat.toFixed(6) + ", " + r.lon.toFixed(6) +
        "<br>± " + (r.radius_m != null ? Math.round(r.radius_m) + " m (90%)" : "?"));

    // neighbours list
    els.nbList.innerHTML = "";
    nbs.forEach((n, i) => {
      const li = document.createElement("li");
      const th = document.createElement("div"); th.className = "thumb";
      if (n.thumbnail) {
        const img = document.createElement("img"); img.loading = "lazy"; img.src = n.thumbnail;
        img.alt = "reference photo " + (n.id || i + 1); th.appendChild(img);
      } else {
        const s = document.createElement("span"); s.className = "nophoto"; s.textContent = "no thumbnail"; th.appendChild(s);
      }
      const num = document.createElement("span"); num.className = "num"; num.textContent = i + 1; th.appendChild(num);
      const meta = document.createElement("div"); meta.className = "meta";
      const d = haversine(here, [n.lat, n.lon]);
      meta.textContent = fmtMeters(d) + " away" + (n.score != null ? " · score " + n.score.toFixed(2) : "");
      meta.title = (n.id ? n.id + " · " : "") + n.lat.toFixed(6) + ", " + n.lon.toFixed(6);
      li.append(th, meta);
      li.addEventListener("click", () => {
        els.nbList.querySelectorAll("li.active").forEach((x) => x.classList.remove("active"));
        li.classList.add("active");
        map.panTo([n.lat, n.lon]);
        nbMarkers[i].openTooltip();
      });
      els.nbList.appendChild(li);
    });
    els.nbCard.hidden = nbs.length === 0;

    // view: the circle and the matches, inside the mapped area when it is bigger
    let b = L.latLng(here).toBounds(2 * Math.max(r.radius_m || 20, 10));
    nbs.forEach((n) => b.extend([n.lat, n.lon]));
    alts.forEach((a) => b.extend(L.latLng(a.lat, a.lon).toBounds(2 * Math.max(a.radius_m || 10, 10))));
    if (areaBounds && !areaBounds.contains(b) && areaBounds.intersects(b)) b = b.extend(areaBounds);
    map.fitBounds(b.pad(0.15), { maxZoom: 20, animate: false });
  }

  // ---------------------------------------------------------------- inputs
  els.file.addEventListener("change", () => { locate(els.file.files[0]); els.file.value = ""; });
  let depth = 0;
  window.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; document.body.classList.add("dragging"); });
  window.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; document.body.classList.remove("dragging"); } });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault(); depth = 0; document.body.classList.remove("dragging");
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) locate(f);
  });
  window.addEventListener("paste", (e) => {
    const f = e.clipboardData && [...e.clipboardData.files].find((x) => x.type.startsWith("image/"));
    if (f) locate(f);
  });
  els.copy.addEventListener("click", async () => {
    const r = api.cg.lastResult; if (!r) return;
    const txt = r.lat.toFixed(6) + ", " + r.lon.toFixed(6);
    try { await navigator.clipboard.writeText(txt); els.copy.textContent = "Copied"; }
    catch (e) { els.copy.textContent = txt; }
    setTimeout(() => { els.copy.textContent = "Copy coordinates"; }, 1500);
  });

  // ---------------------------------------------------------------- start
  fetch("v1/model").then((r) => r.json()).then((m) => {
    api.cg.model = m;
    const ref = m.reference || {};
    els.badge.textContent = (m.method || "model") + " model" + (ref.n ? " · " + ref.n + " reference photos" : "");
    drawBasemap(m);
    setState("ready");
  }).catch((e) => {
    els.badge.textContent = "model info unavailable";
    map.setView([0, 0], 2);
    showError("Could not load model info: " + e.message);
    setState("ready");
  });
})();
