// polypush status page. Polls with short fetches only (no SSE, WebSocket or long-poll):
// /status every second, /meter every 250 ms, /snapshot.jpg every 2 s. Strings come from the
// table the server embedded for the negotiated language (<script id="i18n">).
"use strict";
(function () {
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const LANG = document.documentElement.lang || "en";
  const ALARMS = ["silence", "clipping", "black", "frozen", "low_fps"];
  const $ = (id) => document.querySelector('[data-testid="' + id + '"]');
  const FETCH_TIMEOUT_MS = 3000;

  function t(key, vars) {
    let s = T[key] !== undefined ? T[key] : key;
    if (vars) for (const k in vars) s = s.split("{" + k + "}").join(String(vars[k]));
    return s;
  }
  const num = new Intl.NumberFormat(LANG, { maximumFractionDigits: 1 });
  const when = new Intl.DateTimeFormat(LANG, {
    weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
  const clock = new Intl.DateTimeFormat(LANG, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const fmtTime = (iso) => when.format(new Date(iso));

  function dur(s) {
    if (s === null || s === undefined) return "";
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (LANG.startsWith("zh")) {
      return (h ? h + " 小时 " : "") + (h || m ? m + " 分 " : "") + sec + " 秒";
    }
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
  }

  // A short fetch that cannot hang: aborted after FETCH_TIMEOUT_MS.
  async function get(url, opts) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(url, Object.assign({ cache: "no-store", signal: ctl.signal }, opts || {}));
      if (r.status === 401) { location.href = "/login"; throw new Error("401"); }
      return r;
    } finally {
      clearTimeout(timer);
    }
  }
  function loop(fn, ms) {
    const run = async () => {
      try { await fn(); } catch (e) { /* shown by fn */ }
      setTimeout(run, ms);
    };
    run();
  }
  function setText(id, s) { const el = $(id); if (el && el.textContent !== s) el.textContent = s; }

  // ---- /status -----------------------------------------------------------------------
  function renderStatus(s) {
    const st = $("state");
    st.dataset.state = s.state;
    setText("state", t("state_" + s.state) === "state_" + s.state ? t("state_unknown") : t("state_" + s.state));
    setText("state-for", s.state_for_s !== null ? t("for", { d: dur(s.state_for_s) }) : "");
    setText("version", s.version || "");
    const b = s.broadcast;
    const detail = [];
    if (s.state_reason) detail.push(s.state_reason);
    if (s.capture && s.capture.state === "down") detail.push(t("capture_down", { r: s.capture.reason }));
    if (b) {
      let line = t("sender_" + b.sender_state);
      if (b.sender_error) line += ": " + b.sender_error;
      detail.push(line);
    }
    setText("state-detail", detail.join(" · "));
    const h = $("health");
    h.dataset.healthy = String(!!(s.health && s.health.healthy));
    setText("health", (s.health.healthy ? t("healthy") : t("unhealthy")) + " — " + s.health.message);

    const sc = s.schedule || {};
    if (!sc.configured) {
      setText("window-now", t("no_schedule"));
      setText("window-next", "–");
    } else {
      setText("window-now", sc.in_window
        ? (sc.title ? sc.title + " · " : "") + (sc.window_end ? t("until", { t: fmtTime(sc.window_end) }) : "")
        : t("no_window_now"));
      setText("window-next", sc.next_start
        ? fmtTime(sc.next_start) + (sc.next_end ? " – " + fmtTime(sc.next_end) : "")
        : t("no_next_window"));
    }

    const ov = sc.override, od = $("override");
    od.dataset.kind = ov ? ov.kind : "";
    setText("override", ov ? t("override_" + ov.kind, { t: fmtTime(ov.until), by: ov.by }) : t("no_override"));

    setText("target-bitrate", b ? t("kbps", { v: num.format(b.target_kbps) }) : "–");
    setText("delivered-bitrate", b ? t("kbps", { v: num.format(b.delivered_kbps) }) : "–");
    setText("queue-delay", b && b.queue_delay_ms !== null ? t("ms", { v: num.format(b.queue_delay_ms) }) : "–");
    const tot = s.totals || {};
    setText("reconnects", num.format(tot.reconnects || 0));
    const fd = tot.frames_dropped || {};
    const ring = Object.values(fd.ring || {}).reduce((a, v) => a + v, 0);
    const behind = fd.encoder_behind || 0;
    setText("drops", num.format(ring + behind) + " (" + t("drops_detail", { r: num.format(ring), e: num.format(behind) }) + ")");

    renderAlarms(s);
    setText("updated", t("updated", { t: clock.format(new Date()) }));
  }

  function renderAlarms(s) {
    const m = s.media;
    let note = "";
    if (!("media" in s)) note = t("alarms_not_served");
    else if (!m) note = t("alarms_off");
    else if (m.enabled === false) note = t("alarms_disabled");
    else if ((m.audio && m.audio.state === "reconnecting") || (m.video && m.video.state === "reconnecting")) note = t("paused");
    setText("alarms-note", note);
    const active = new Set((m && m.active) || []);
    for (const name of ALARMS) {
      const li = document.querySelector('li[data-alarm="' + name + '"]');
      if (!li) continue;
      const a = m && m.alarms && m.alarms[name];
      const on = active.has(name) || !!(a && a.active);
      li.classList.toggle("active", on);
      li.dataset.active = String(on);
      let val = "–";
      if (m && m.enabled !== false) {
        val = on ? (a && a.for_s !== null && a.for_s !== undefined ? t("alarm_active_for", { d: dur(a.for_s) }) : t("alarm_active")) : t("alarm_ok");
      }
      li.querySelector(".val").textContent = val;
    }
  }

  async function pollStatus() {
    let r;
    try {
      r = await get("/status");
      if (!r.ok) throw new Error("HTTP " + r.status);
      renderStatus(await r.json());
      $("conn-error").hidden = true;
    } catch (e) {
      const el = $("conn-error");
      el.textContent = t("unreachable", { r: e.message || String(e) });
      el.hidden = false;
    }
  }

  // ---- /meter ------------------------------------------------------------------------
  const pct = (db) => Math.max(0, Math.min(1, (db + 60) / 60)) * 100;
  function renderMeter(m) {
    const box = $("meter");
    const chans = m.channels || [];
    while (box.children.length > chans.length) box.lastChild.remove();
    while (box.children.length < chans.length) {
      const i = box.children.length;
      const row = document.createElement("div");
      row.className = "ch";
      row.dataset.testid = "meter-ch" + i;
      row.innerHTML = '<span class="lbl"></span><div class="bar"><div class="fill"></div><div class="peak"></div></div><span class="db"></span>';
      row.querySelector(".lbl").textContent = t("channel", { n: i + 1 });
      box.appendChild(row);
    }
    chans.forEach((c, i) => {
      const row = box.children[i];
      row.dataset.peak = c.peak_dbfs.toFixed(1);
      row.dataset.rms = c.rms_dbfs.toFixed(1);
      const fill = row.querySelector(".fill");
      fill.style.width = pct(c.rms_dbfs) + "%";
      fill.classList.toggle("hot", c.peak_dbfs > -18 && c.peak_dbfs <= -6);
      fill.classList.toggle("over", c.peak_dbfs > -6);
      row.querySelector(".peak").style.left = pct(c.peak_dbfs) + "%";
      row.querySelector(".db").textContent = c.peak_dbfs <= -90 ? "-∞" : c.peak_dbfs.toFixed(1);
    });
    setText("meter-note", chans.length ? "" : t("no_audio"));
  }
  let meterMissing = false;
  async function pollMeter() {
    if (meterMissing) return;
    try {
      const r = await get("/meter");
      if (r.status === 404) { meterMissing = true; setText("meter-note", t("meter_not_served")); return; }
      if (!r.ok) { renderMeter({ channels: [] }); setText("meter-note", t("meter_unavailable", { r: (await r.text()).trim() })); return; }
      renderMeter(await r.json());
    } catch (e) {
      setText("meter-note", t("meter_unavailable", { r: e.message || String(e) }));
    }
  }

  // ---- /snapshot.jpg -----------------------------------------------------------------
  let snapUrl = null;
  let snapMissing = false;
  async function pollSnapshot() {
    if (snapMissing) return;
    const img = $("snapshot"), ph = $("snapshot-placeholder");
    const showPlaceholder = (s) => { img.hidden = true; ph.hidden = false; ph.textContent = s; };
    try {
      const r = await get("/snapshot.jpg?t=" + Date.now());
      if (r.status === 404) { snapMissing = true; showPlaceholder(t("picture_not_served")); return; }
      if (!r.ok) { showPlaceholder(t("no_picture", { r: (await r.text()).trim() })); return; }
      const url = URL.createObjectURL(await r.blob());
      await new Promise((ok, fail) => { img.onload = ok; img.onerror = fail; img.src = url; });
      if (snapUrl) URL.revokeObjectURL(snapUrl);
      snapUrl = url;
      img.hidden = false;
      ph.hidden = true;
    } catch (e) {
      showPlaceholder(t("no_picture", { r: e.message || String(e) }));
    }
  }

  // ---- reconnect ---------------------------------------------------------------------
  function wireReconnect() {
    const btn = $("reconnect"), box = $("reconnect-confirm"), out = $("reconnect-result");
    btn.addEventListener("click", () => { box.hidden = false; btn.hidden = true; $("reconnect-yes").focus(); });
    $("reconnect-no").addEventListener("click", () => { box.hidden = true; btn.hidden = false; });
    $("reconnect-yes").addEventListener("click", async () => {
      box.hidden = true;
      btn.hidden = false;
      btn.disabled = true;
      try {
        const r = await get("/reconnect", { method: "POST" });
        const body = (await r.text()).trim();
        out.dataset.code = String(r.status);
        if (r.status === 202) { out.dataset.ok = "true"; out.textContent = t("reconnect_sent"); }
        else if (r.status === 409) { out.dataset.ok = "false"; out.textContent = t("reconnect_none"); }
        else { out.dataset.ok = "false"; out.textContent = t("reconnect_failed", { c: r.status, r: body }); }
      } catch (e) {
        out.dataset.code = "0";
        out.dataset.ok = "false";
        out.textContent = t("reconnect_failed", { c: 0, r: e.message || String(e) });
      } finally {
        btn.disabled = false;
        pollStatus();
      }
    });
  }

  // ---- lesson control: extend, start now, stop now -----------------------------------------
  function wireControl() {
    const box = $("control-confirm"), out = $("control-result");
    let pending = null;
    document.querySelectorAll("button[data-action]").forEach((btn) => {
      btn.addEventListener("click", () => {
        pending = { action: btn.dataset.action, minutes: Number(btn.dataset.minutes || 0) };
        setText("control-confirm-text", t("confirm_" + pending.action, { m: pending.minutes }));
        box.hidden = false;
        $("control-yes").focus();
      });
    });
    $("control-no").addEventListener("click", () => { box.hidden = true; pending = null; });
    $("control-yes").addEventListener("click", async () => {
      box.hidden = true;
      if (!pending) return;
      const p = pending;
      pending = null;
      const body = { by: "page" };
      if (p.action === "extend") body.minutes = p.minutes;
      try {
        const r = await get("/" + p.action, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
        let v = {};
        try { v = await r.json(); } catch (e) { v = {}; }
        out.dataset.code = String(r.status);
        out.dataset.ok = String(r.status === 200);
        if (r.status === 200) out.textContent = t("control_done", { m: v.message || "" });
        else if (r.status === 409) out.textContent = t("control_refused", { m: v.error || "" });
        else out.textContent = t("control_failed", { c: r.status, r: v.error || "" });
      } catch (e) {
        out.dataset.code = "0";
        out.dataset.ok = "false";
        out.textContent = t("control_failed", { c: 0, r: e.message || String(e) });
      } finally {
        pollStatus();
      }
    });
  }

  wireReconnect();
  wireControl();
  loop(pollStatus, 1000);
  loop(pollMeter, 250);
  loop(pollSnapshot, 2000);
})();
