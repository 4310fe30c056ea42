/* The photo review's controls: opacity, overlay on/off, side by side, sort, filters, keys.
   Works offline; everything acts on the cards already in the page. */
(function () {
  var section = document.getElementById("review");
  var grid = document.getElementById("rv-grid");
  if (!section || !grid) return;
  var cards = Array.prototype.slice.call(grid.children);
  var alpha = document.getElementById("rv-alpha");
  var overlay = document.getElementById("rv-overlay");
  var side = document.getElementById("rv-side");
  var sort = document.getElementById("rv-sort");
  var least = document.getElementById("rv-min");
  var leastText = document.getElementById("rv-min-text");
  var shown = document.getElementById("rv-shown");
  var buttons = section.querySelectorAll("button[data-rv-verdict]");
  var verdict = "";

  function confidence(card) {
    var value = parseFloat(card.dataset.confidence);
    if (isNaN(value)) return -1;
    return value <= 1 ? value * 100 : value;
  }
  function setAlpha(value) {
    value = Math.max(0, Math.min(100, value));
    alpha.value = String(value);
    section.style.setProperty("--rv-alpha", String(value / 100));
  }
  function toggle(button, name) {
    var on = !section.classList.contains(name);
    section.classList.toggle(name, on);
    return on;
  }
  function setOverlay() {
    var hidden = toggle(overlay, "rv-off");
    overlay.setAttribute("aria-pressed", String(!hidden));
  }
  function setSide() {
    side.setAttribute("aria-pressed", String(toggle(side, "rv-side")));
  }
  function apply() {
    var order = sort.value, floor = parseInt(least.value, 10), count = 0;
    leastText.textContent = floor + "%";
    var sorted = cards.slice().sort(function (a, b) {
      if (order === "conf-desc") return confidence(b) - confidence(a) || a.dataset.order - b.dataset.order;
      if (order === "conf-asc") return confidence(a) - confidence(b) || a.dataset.order - b.dataset.order;
      if (order === "verdict") {
        return a.dataset.verdict.localeCompare(b.dataset.verdict) || a.dataset.order - b.dataset.order;
      }
      return a.dataset.order - b.dataset.order;
    });
    sorted.forEach(function (card) {
      var hit = (!verdict || card.dataset.verdict === verdict) && (floor === 0 || confidence(card) >= floor);
      card.hidden = !hit;
      if (hit) count++;
      grid.appendChild(card);
    });
    shown.textContent = count === cards.length ? cards.length + " photos" : count + " of " + cards.length + " photos";
  }
  function move(step) {
    var visible = cards.filter(function (card) { return !card.hidden; });
    visible.sort(function (a, b) {
      return Array.prototype.indexOf.call(grid.children, a) - Array.prototype.indexOf.call(grid.children, b);
    });
    if (!visible.length) return;
    var current = document.activeElement && document.activeElement.closest ?
      document.activeElement.closest(".rv-card") : null;
    var at = visible.indexOf(current);
    var next = visible[at < 0 ? 0 : Math.max(0, Math.min(visible.length - 1, at + step))];
    next.focus({ preventScroll: true });
    next.scrollIntoView({ block: "nearest" });
  }

  alpha.addEventListener("input", function () { setAlpha(parseInt(alpha.value, 10)); });
  overlay.addEventListener("click", setOverlay);
  side.addEventListener("click", setSide);
  sort.addEventListener("change", apply);
  least.addEventListener("input", apply);
  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      verdict = button.dataset.rvVerdict;
      buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
      apply();
    });
  });
  document.addEventListener("keydown", function (event) {
    var tag = event.target && event.target.tagName;
    if (event.ctrlKey || event.metaKey || event.altKey || tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    var key = event.key, handled = true;
    if (key === "j" || key === "ArrowRight") move(1);
    else if (key === "k" || key === "ArrowLeft") move(-1);
    else if (key === "o") setOverlay();
    else if (key === "s") setSide();
    else if (key === "+" || key === "=") setAlpha(parseInt(alpha.value, 10) + 10);
    else if (key === "-") setAlpha(parseInt(alpha.value, 10) - 10);
    else handled = false;
    if (handled) event.preventDefault();
  });
  setAlpha(parseInt(alpha.value, 10));
  apply();
})();
