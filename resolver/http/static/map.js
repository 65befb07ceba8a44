// The map page: draws the registry's boundaries, asks /v1/resolve about a point, shows the answer.
// Everything it shows is built with textContent: names and notes from the registry are data, not HTML.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var answerBox = $("answer"), statusLine = $("status"), found = $("found");
  var STYLE = { color: "#1a4f8b", weight: 1, fillOpacity: 0.08, className: "boundary" };
  var CHOSEN = { color: "#c75000", weight: 3, fillOpacity: 0.2 };
  var REASONS = {
    no_jurisdiction: "no jurisdiction covers this point",
    concern_not_offered: "no jurisdiction covering it offers this concern",
    no_endpoint: "the jurisdiction responsible publishes no current GeoReport v2 endpoint"
  };

  var map = L.map("map", { keyboard: true }).setView([30, -40], 2);
  if (config.tileUrl) {
    L.tileLayer(config.tileUrl, { attribution: config.tileAttribution, maxZoom: 19 }).addTo(map);
  }
  // The map, for scripts and tests that drive the page.
  window.geowebMap = map;
  var boundaries = L.featureGroup().addTo(map);
  var layers = {}, jurisdictions = [], marker = null, chosen = null;

  function el(tag, text, parent) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  function link(href, text, parent) {
    var a = el("a", text, parent);
    a.href = href;
    return a;
  }
  function boundaryLinks(id, parent) {
    var base = "/v1/jurisdictions/" + encodeURIComponent(id);
    parent.appendChild(document.createTextNode(" ("));
    link(base + ".geojson", "GeoJSON", parent);
    parent.appendChild(document.createTextNode(", "));
    link(base + ".kml", "KML", parent);
    parent.appendChild(document.createTextNode(")"));
  }

  async function getJson(url) {
    var response = await fetch(url);
    var body = await response.json();
    if (!response.ok && !body.query) throw new Error(body.detail || response.statusText);
    return body;
  }

  async function loadJurisdictions() {
    try {
      jurisdictions = (await getJson("/v1/jurisdictions?limit=10000")).jurisdictions;
    } catch (error) {
      statusLine.textContent = "The jurisdictions could not be read: " + error.message;
      return;
    }
    var queue = jurisdictions.filter(function (j) { return j.has_boundary; });
    var drawn = 0;
    async function worker() {
      while (queue.length) {
        var j = queue.shift();
        try {
          var feature = await getJson("/v1/jurisdictions/" + encodeURIComponent(j.id) + ".geojson");
          layers[j.id] = L.geoJSON(feature, { style: STYLE, interactive: false }).addTo(boundaries);
          drawn += 1;
        } catch (error) { /* one boundary missing leaves the others drawn */ }
      }
    }
    await Promise.all([worker(), worker(), worker(), worker(), worker(), worker()]);
    if (drawn) map.fitBounds(boundaries.getBounds());
    statusLine.textContent = jurisdictions.length + " jurisdictions, " + drawn + " boundaries drawn.";
    $("map").dataset.drawn = String(drawn);
    search();
  }

  function highlight(id) {
    if (chosen) chosen.setStyle(STYLE);
    chosen = id ? layers[id] || null : null;
    if (chosen) chosen.setStyle(CHOSEN);
  }

  function render(body) {
    answerBox.textContent = "";
    answerBox.className = body.fallback ? "fallback" : "";
    answerBox.dataset.fallback = String(body.fallback);
    answerBox.dataset.endpoint = body.endpoint ? body.endpoint.url : "";
    var title = body.found
      ? (body.fallback ? "Fallback: " + (body.endpoint.name || "ad hoc service") : body.jurisdiction.name)
      : "Nobody takes reports here";
    el("h2", title, answerBox);
    el("p", body.message, answerBox);
    if (body.endpoint) {
      var p = el("p", "Endpoint: ", answerBox);
      link(body.endpoint.url, body.endpoint.url, p).className = "endpoint";
    }
    if (body.fallback || body.reason) {
      el("p", "Why the fallback: " + (REASONS[body.reason] || body.reason), answerBox);
    }
    if (body.jurisdiction) {
      var j = el("p", "Jurisdiction: " + body.jurisdiction.name + " [" + body.jurisdiction.id + "]", answerBox);
      boundaryLinks(body.jurisdiction.id, j);
    }
    if (body.concern && body.concern.query) {
      el("p", "Concern \u201c" + body.concern.query + "\u201d: " + body.concern.status.replace("_", " "), answerBox);
    }
    if (body.alternatives.length) {
      el("h3", "Also covering this point, not chosen", answerBox);
      var alternatives = el("ul", null, answerBox);
      body.alternatives.forEach(function (c) {
        var li = el("li", c.jurisdiction.name + ": " + (c.why_not_chosen || c.concern_status), alternatives);
        boundaryLinks(c.jurisdiction.id, li);
      });
    }
    el("h3", "Where each fact came from", answerBox);
    var facts = el("ul", null, answerBox);
    body.provenance.forEach(function (f) {
      var text = f.fact + ": " + f.source + ", " + f.reference;
      if (f.expires) text += " (holds until " + f.expires + ")";
      if (f.note) text += ". " + f.note;
      el("li", text, facts);
    });
    highlight(body.jurisdiction && !body.fallback ? body.jurisdiction.id : null);
  }

  async function ask(lat, long) {
    var concern = $("concern").value.trim();
    var url = "/v1/resolve?lat=" + encodeURIComponent(lat) + "&long=" + encodeURIComponent(long) +
      (concern ? "&concern=" + encodeURIComponent(concern) : "");
    answerBox.textContent = "Asking\u2026";
    delete answerBox.dataset.endpoint;
    var body;
    try {
      body = await getJson(url);
    } catch (error) {
      answerBox.textContent = "";
      el("p", "Not answered: " + error.message, answerBox);
      return;
    }
    var point = [Number(lat), Number(long)];
    if (marker) marker.remove();
    marker = L.circleMarker(point, { radius: 7, color: "#c75000" }).addTo(map);
    render(body);
  }

  map.on("click", function (e) {
    $("lat").value = e.latlng.lat.toFixed(6);
    $("long").value = e.latlng.wrap().lng.toFixed(6);
    ask($("lat").value, $("long").value);
  });
  // Keyboard: arrows pan and +/- zoom (Leaflet); Enter asks about the centre of the map.
  $("map").addEventListener("keydown", function (e) {
    if (e.key !== "Enter" || e.target !== $("map")) return;
    var centre = map.getCenter();
    $("lat").value = centre.lat.toFixed(6);
    $("long").value = centre.wrap().lng.toFixed(6);
    ask($("lat").value, $("long").value);
  });
  $("map").setAttribute("aria-label", "Map of the jurisdictions served: arrows move it, + and - zoom, " +
    "Enter asks about its centre; or click a point");
  $("ask").addEventListener("submit", function (e) {
    e.preventDefault();
    ask($("lat").value.trim(), $("long").value.trim());
  });

  function search() {
    var words = $("q").value.trim().toLowerCase();
    found.textContent = "";
    var matches = jurisdictions.filter(function (j) {
      return !words || j.name.toLowerCase().indexOf(words) >= 0 || j.id.indexOf(words) >= 0;
    }).slice(0, 50);
    matches.forEach(function (j) {
      var li = el("li", null, found);
      if (layers[j.id]) {
        var button = el("button", j.name, li);
        button.type = "button";
        button.className = "link";
        button.addEventListener("click", function () {
          map.fitBounds(layers[j.id].getBounds());
          highlight(j.id);
        });
        boundaryLinks(j.id, li);
      } else {
        li.textContent = j.name + " (no boundary known)";
      }
    });
  }
  $("q").addEventListener("input", search);
  $("search").addEventListener("submit", function (e) { e.preventDefault(); search(); });
  loadJurisdictions();
})();
