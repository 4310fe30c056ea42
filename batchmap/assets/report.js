/* batchmap's HTML report. Inlined in <head>: the error listener must be registered before
   any <img> is parsed, so even the first failed thumbnail is marked missing. */
document.addEventListener("error", function (event) {
  var img = event.target;
  if (img.tagName === "IMG" && img.closest(".tile")) img.closest(".tile").classList.add("missing");
}, true);

/* Each filter box names the container whose children it hides (case-insensitive text match);
   verdict buttons narrow the same container by each child's data-verdict. */
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-filter]").forEach(function (box) {
    var target = document.getElementById(box.dataset.filter);
    var items = Array.prototype.slice.call(target.children);
    var shown = document.getElementById(box.dataset.filter + "-shown");
    var buttons = document.querySelectorAll('button[data-for="' + box.dataset.filter + '"]');
    var verdict = "";
    function apply() {
      var needle = box.value.trim().toLowerCase(), count = 0;
      items.forEach(function (item) {
        var hit = (!needle || item.textContent.toLowerCase().indexOf(needle) !== -1) &&
          (!verdict || item.dataset.verdict === verdict);
        item.hidden = !hit;
        if (hit) count++;
      });
      if (shown) shown.textContent = needle || verdict ? count + " of " + items.length + " match" : "";
    }
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        verdict = button.dataset.verdict;
        buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
        apply();
      });
    });
    box.addEventListener("input", apply);
  });
});
