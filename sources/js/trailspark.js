/*! trailspark.js: first-party website tracking for a trailspark server. No dependencies.
 *
 * Install (two lines; the first queues calls made before the script has loaded):
 *   <script>window.trailspark=window.trailspark||[];["identify","track","page","consent","reset"].forEach(function(m){trailspark[m]=trailspark[m]||function(){trailspark.push([m].concat([].slice.call(arguments)))}})</script>
 *   <script async src="https://YOUR-SERVER/js/trailspark.js" data-key="sk_..."></script>
 *
 * Options, as attributes of the script tag:
 *   data-key          the signal-staging API key (required)
 *   data-host         where to send (default: the origin the script was loaded from)
 *   data-consent      "required": send nothing until trailspark.consent(true)
 *   data-respect-dnt  "false": ignore the browser's Do Not Track / Global Privacy Control
 *   data-auto-page    "false": no automatic page views
 *   data-forms        "false": no automatic form capture
 *   data-flush-ms     how long events wait to be sent together (default 1000)
 *
 * Messages are Segment calls sent as batches to <host>/v1/b (text/plain, so no CORS
 * preflight), by fetch with keepalive, and by navigator.sendBeacon when the page is hidden
 * or left. Unsent messages wait in localStorage and go out on the next page. */
(function (w, d) {
  "use strict";
  var queued = w.trailspark;
  if (queued && queued.loaded) return;
  var me = d.currentScript || d.querySelector('script[src*="/js/trailspark.js"]');
  var cfg = (me && me.dataset) || {};
  var key = cfg.key;
  var host = (cfg.host || (me ? new URL(me.src, location.href).origin : "")).replace(/\/+$/, "");
  var endpoint = host + "/v1/b";
  var VERSION = "1.0.0";
  var MAX_BATCH = 100;
  var MAX_QUEUE = 1000;
  // A keepalive fetch and a beacon may carry 64 KiB between them; stay under it.
  var MAX_BODY = 60000;
  var FLUSH_MS = +cfg.flushMs || 1000;

  var store = (function () {
    try {
      var s = w.localStorage;
      s.setItem("ts_t", "1");
      s.removeItem("ts_t");
      return s;
    } catch (e) {
      return null;
    }
  })();

  function uuid() {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }

  // First-party cookie, with localStorage as the fallback where cookies are refused.
  function remember(name, value) {
    var attrs = "; Path=/; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : "");
    d.cookie = name + "=" + (value === null ? "; Max-Age=0" : encodeURIComponent(value) + "; Max-Age=31536000") + attrs;
    if (store) value === null ? store.removeItem(name) : store.setItem(name, value);
  }

  function recall(name) {
    return cookie(name) || (store && store.getItem(name)) || null;
  }

  var anonymousId = recall("ts_aid") || uuid();
  remember("ts_aid", anonymousId);
  var userId = recall("ts_uid");
  var decided = recall("ts_consent");
  var dnt = cfg.respectDnt !== "false" &&
    (navigator.doNotTrack === "1" || w.doNotTrack === "1" || navigator.globalPrivacyControl === true);
  var enabled = decided ? decided === "granted" : !dnt && cfg.consent !== "required";

  var buffer = [];
  try {
    buffer = (store && JSON.parse(store.getItem("ts_queue") || "[]")) || [];
  } catch (e) {}
  var timer = null;
  var inflight = null;
  var failures = 0;

  // What is not known to be delivered, kept for the next page: a batch in flight that the
  // page's end cuts off is sent again (the server drops the repeat by its messageId).
  function save() {
    if (!store) return;
    try {
      var all = (inflight || []).concat(buffer);
      if (all.length) store.setItem("ts_queue", JSON.stringify(all));
      else store.removeItem("ts_queue");
    } catch (e) {}
  }

  function pageProps() {
    return {
      path: location.pathname,
      url: location.href,
      search: location.search,
      title: d.title,
      referrer: d.referrer
    };
  }

  function message(type, fields) {
    var msg = {
      type: type,
      messageId: uuid(),
      anonymousId: anonymousId,
      timestamp: new Date().toISOString(),
      context: {
        library: { name: "trailspark.js", version: VERSION },
        page: pageProps(),
        userAgent: navigator.userAgent,
        locale: navigator.language
      }
    };
    if (userId) msg.userId = userId;
    for (var k in fields) if (fields[k] !== undefined) msg[k] = fields[k];
    return msg;
  }

  function enqueue(type, fields) {
    if (!enabled || !key) return;
    buffer.push(message(type, fields));
    if (buffer.length > MAX_QUEUE) buffer.splice(0, buffer.length - MAX_QUEUE);
    save();
    if (buffer.length >= MAX_BATCH) flush();
    else schedule(FLUSH_MS);
  }

  function schedule(ms) {
    if (!timer) timer = setTimeout(function () {
      timer = null;
      flush();
    }, ms);
  }

  function payload(batch) {
    return JSON.stringify({ batch: batch, writeKey: key, sentAt: new Date().toISOString() });
  }

  // The first messages of the buffer whose batch fits one request.
  function take() {
    var n = Math.min(buffer.length, MAX_BATCH);
    while (n > 1 && payload(buffer.slice(0, n)).length > MAX_BODY) n = Math.ceil(n / 2);
    return buffer.splice(0, n);
  }

  function flush() {
    if (inflight || !buffer.length || !enabled) return;
    var batch = take();
    var body = payload(batch);
    inflight = batch;
    fetch(endpoint, {
      method: "POST",
      body: body,
      headers: { "Content-Type": "text/plain" },
      keepalive: body.length <= MAX_BODY,
      credentials: "omit"
    }).then(function (r) {
      // A refusal for good (a bad key, a malformed message) is dropped, not retried.
      if (!r.ok && (r.status >= 500 || r.status === 408 || r.status === 429)) throw r.status;
    }).then(function () {
      inflight = null;
      failures = 0;
      save();
      if (buffer.length) schedule(0);
    }, function () {
      inflight = null;
      buffer = batch.concat(buffer);
      save();
      // Backoff: 1 s, 2 s, 4 s … up to a minute, with jitter.
      failures++;
      schedule(Math.min(60000, 1000 * Math.pow(2, failures - 1)) * (0.5 + Math.random()));
    });
  }

  // The page is going away: what is left goes by beacon, which the browser delivers after
  // the page is gone. What the beacon queue will not take stays for the next page.
  function beacon() {
    if (!enabled || !buffer.length || !navigator.sendBeacon) return;
    while (buffer.length) {
      var batch = take();
      for (var i = 0; i < batch.length; i++) batch[i].context.transport = "beacon";
      var blob = new Blob([payload(batch)], { type: "text/plain" });
      if (!navigator.sendBeacon(endpoint, blob)) {
        buffer = batch.concat(buffer);
        break;
      }
    }
    save();
  }

  var lastUrl = null;
  function page(name, properties) {
    if (typeof name === "object" && name !== null) {
      properties = name;
      name = undefined;
    }
    lastUrl = location.href;
    var props = pageProps();
    for (var k in properties || {}) props[k] = properties[k];
    enqueue("page", { name: name, properties: props });
  }

  function identify(id, traits) {
    if (typeof id === "object" && id !== null) {
      traits = id;
      id = undefined;
    }
    if (id !== undefined && id !== null) {
      userId = String(id);
      remember("ts_uid", userId);
    }
    enqueue("identify", { traits: traits || {} });
  }

  function track(event, properties) {
    enqueue("track", { event: String(event), properties: properties || {} });
  }

  function consent(granted) {
    enabled = !!granted;
    remember("ts_consent", enabled ? "granted" : "denied");
    if (!enabled) {
      buffer = [];
      save();
    }
  }

  function reset() {
    userId = null;
    remember("ts_uid", null);
    anonymousId = uuid();
    remember("ts_aid", anonymousId);
  }

  // Single-page apps: a pushState, replaceState, back/forward or hash change to a new URL
  // is a page view.
  function routeChanged() {
    if (location.href !== lastUrl) page();
  }

  function watchRoutes() {
    ["pushState", "replaceState"].forEach(function (m) {
      var original = history[m];
      history[m] = function () {
        var r = original.apply(this, arguments);
        routeChanged();
        return r;
      };
    });
    w.addEventListener("popstate", routeChanged);
    w.addEventListener("hashchange", routeChanged);
  }

  function emailOf(form) {
    var fields = form.querySelectorAll("input");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      var named = f.type === "email" || /e-?mail/i.test(f.name || f.id || "");
      if (named && f.value && f.value.indexOf("@") > 0) return f.value.trim();
    }
    return null;
  }

  // A form's submission identifies its email, then records the submission. Only the email
  // field is read: other fields stay on the page.
  function watchForms() {
    d.addEventListener("submit", function (e) {
      var form = e.target;
      if (!form || form.nodeName !== "FORM" || form.hasAttribute("data-trailspark-ignore")) return;
      var email = emailOf(form);
      if (email) identify({ email: email });
      track("Form Submitted", {
        form_id: form.id || undefined,
        form_name: form.getAttribute("name") || undefined,
        form_action: form.action || undefined,
        has_email: !!email
      });
      // A submission that navigates sends these by beacon as the page goes; one that stays
      // (an in-page form) sends them with the next batch.
    }, true);
  }

  w.addEventListener("pagehide", beacon);
  d.addEventListener("visibilitychange", function () {
    if (d.visibilityState === "hidden") beacon();
  });

  var api = {
    loaded: true,
    identify: identify,
    track: track,
    page: page,
    consent: consent,
    reset: reset,
    flush: flush,
    anonymousId: function () {
      return anonymousId;
    }
  };
  w.trailspark = api;
  if (cfg.autoPage !== "false") page();
  if (cfg.autoPage !== "false") watchRoutes();
  if (cfg.forms !== "false") watchForms();
  if (Array.isArray(queued)) {
    queued.forEach(function (call) {
      if (api[call[0]]) api[call[0]].apply(null, call.slice(1));
    });
  }
  if (buffer.length) schedule(0);
})(window, document);
