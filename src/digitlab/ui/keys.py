"""Keyboard behaviour the app's widgets lack, as page scripts (`SCRIPTS`, added by `common.apply_style`).

**An answer is saved only once a digit is picked.** "What did you draw?" (Draw's and Compare's pills) saves
on the first click. Its buttons are a radio group (react-aria): Tab into it lands on the first answer, "0"
(Shift+Tab: on the last, "Not a digit"), and Space or Enter there activates it. So a single Space, pressed to
scroll the page or to "enter" the group, stored the label 0 for a drawing nobody had answered. Here Space and
Enter on an answer only act once the person has picked it with the keyboard since their focus came into the
group: an arrow key, Home/End, or the digit typed ("7" moves to the 7). Before that, the keys are held back
and a hint says how to choose; it says so too as the keyboard's focus comes into the group (nothing on the page
said the arrow keys pick: the help's tooltip shows to a pointer). A mouse click or a tap acts at once, as before.

**An answer waits for the last stroke's reading.** The canvas reports a stroke about 200 ms after the pen
is lifted; until then the answers on the page are the previous picture's. An answer clicked in that moment
(the pen lifted and the answer clicked at once) was saved on the half-drawn picture: a 4 missing its last
stroke stored as "you drew 4", counted as the model's mistake, on every model on Compare. Clicks and taps on
the answers are held back while a stroke is drawn and for `STROKE_SETTLE_MS` after it, with a hint, and the
answer clicked is given to the new reading once it shows (it was dropped, with no word). Undo, Clear and a page link clicked in that moment are carried out once it
has passed: Undo took back two strokes (the unreported one and the one before), and leaving the page lost
the stroke. A deferred Clear is carried out as soon as a new stroke begins: waiting for that stroke too, it
wiped the digit drawn right after the click (a newcomer's tour, session 26). Undo and Clear clicked while still
disabled after a first stroke (the page has not heard of it yet) are carried out too, once enabled. Number's
Confirm and Not a number are deferred the same way. After an Undo or Clear, until the page shows the picture
it leaves, an answer clicked is held back too and given to that picture (after Clear there is none: dropped).

**Enter confirms "What did you write?", typed on a number pad.** A phone gives the box its number pad
(`inputmode="numeric"`, set by the script: it showed letters). Number's answer box is no form (what is typed must reach the page
when the box loses focus, so the next reading can keep it: `views/number.py`), and Enter in a lone text box
only hands its text over. Enter there now also clicks the box's Confirm button, once its text is handed over:
the page checks it and saves it as a click does (an empty or non-digit answer gets the same message).

**A page picked in the narrow screen's menu closes it.** On a narrow screen the page menu opens over the page;
Streamlit closes it after a pick on a phone's browser, but in a narrow window (or a browser that does not say it
is a phone's) it stayed open over the page picked, hiding it.
"""

from __future__ import annotations

import json

#: containers of the answer pills (Draw: `fb_<record>_<model>`, Compare: `cmp_fb_<picture>`)
ANSWER_GROUPS = ('[class*="st-key-fb_"]', '[class*="st-key-cmp_fb_"]')
#: the hint shown (and read out) when Space or Enter is held back
PICK_HINT = "Pick your answer first: arrow keys or type the digit, then Space or Enter."
#: the answers' help says it too
PICK_HELP = "With the keyboard: pick an answer with the arrow keys or by typing the digit, then press Space."
#: shown (and read out) as the keyboard's focus comes into the answers, until one is picked: nothing on the page said
#: that the arrow keys pick one (the help's tooltip shows to a pointer only)
KEYS_HINT = "Pick with the arrow keys or by typing the digit, then press Space or Enter."
#: how long after the pen is lifted an answer is held back (the canvas reports after ~200 ms; a click 300 ms
#: after was already the new picture's)
STROKE_SETTLE_MS = 600
#: what is deferred rather than refused then: the canvas tools (`canvas.py`: `<page>_undo`, `<page>_clear`)
#: and the page links
CLEAR_BUTTON = '[class*="_clear"] button'  #: carried out as soon as a new stroke begins, too
#: Number's Confirm and Not a number are deferred too: clicked as the pen lifted, they confirmed the reading before
#: that stroke ("390" saved, and "3907" left a new unconfirmed reading: a newcomer's tour, session 30)
DEFERRED = ('[class*="_undo"] button', CLEAR_BUTTON, '[data-testid="stTopNavLink"]',
            '[data-testid="stSidebarNavLink"]', '[class*="st-key-num_confirm_"] button',
            '[class*="st-key-num_none_"] button')  # fmt: skip
#: Undo and Clear: until the page shows the picture they leave, the answers on it are the earlier picture's
TOOLS = ('[class*="_undo"] button', CLEAR_BUTTON)
#: the hint then; an answer clicked goes with the picture Undo leaves (none after Clear: it is dropped)
TOOL_HINT = "One moment: the drawing is changing. Your answer goes with the new picture."
#: the hint shown then; the answer clicked is given to the new reading once it shows, within ANSWER_WAIT_MS (it
#: was dropped, the hint gone with the old answers: a newcomer's tour, session 26)
SETTLE_HINT = "One moment: your last stroke is being read. Your answer goes with the new reading."
ANSWER_WAIT_MS = 6000
#: Number's answer box and its button (`views/number.py`: `num_form_<key>` holds `num_confirm_<key>`)
ENTER_FORM = '[class*="st-key-num_form_"]'
ENTER_BUTTON = '[class*="st-key-num_confirm_"] button'

_ANSWER_KEYS = """<script>
(() => {
  if (window.__dlAnswerKeys) return;
  window.__dlAnswerKeys = true;
  const GROUP = %(groups)s.map(g => g + ' [role="radiogroup"]').join(", ");
  const HINT = %(hint)s, KEYS = %(keys)s, CLEAR = %(clear)s;
  const MOVES = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"]);
  const style = document.createElement("style");
  // over what follows, not in the flow: a line added under the pills as a finger went down on one moved them
  // (the phone's scroll kept its anchor: 52 px up), and the tap landed between pills or on "Not a digit"
  // (3 of 10 quick taps lost or mislabelled, a newcomer's tour, session 33)
  style.textContent = `[data-dl-pick-hint] {position:relative;}
    [data-dl-pick-hint]::after {content:attr(data-dl-pick-hint); position:absolute; left:0; right:0; top:100%%;
    z-index:5; pointer-events:none; font-size:.85rem; color:#7A4B00; background:rgba(255,255,255,.97);
    padding:.15rem .3rem; border-radius:.3rem; box-shadow:0 1px 4px rgba(0,0,0,.18);}
    [data-dl-pick-hint][data-dl-by-keys]::after {position:static; flex-basis:100%%; order:99; box-shadow:none;
    background:#FFF7E6;}`;
  // the keyboard's hints take their own line, in the flow: over what follows they covered "Saved to the history
  // as #N" while they showed (a tour). (A finger's are over it: see above.)
  const say = (group, text) => { group.setAttribute("data-dl-pick-hint", text); group.setAttribute("data-dl-by-keys", "");
                                 live.textContent = text; };
  document.head.appendChild(style);
  const live = document.createElement("div");  // the hint, read out by a screen reader
  live.setAttribute("aria-live", "polite");
  live.setAttribute("data-testid", "dl-pick-hint");
  live.style.cssText = "position:absolute; width:1px; height:1px; overflow:hidden; clip:rect(0 0 0 0);";
  document.body.appendChild(live);
  const groupOf = (el) => (el instanceof Element ? el.closest(GROUP) : null);
  const radios = (group) => [...group.querySelectorAll('[role="radio"]')];
  const picked = new WeakSet();  // groups whose focused answer was picked with the keyboard
  let held = null;  // the key whose keydown was held back: its keyup is held back too
  const settle = (group) => { group.removeAttribute("data-dl-pick-hint"); group.removeAttribute("data-dl-by-keys");
                              live.textContent = ""; };
  // focus coming into a group (Tab, a click, a script) picks nothing; moving inside it keeps what was picked.
  // Come with the keyboard, the group says how to pick (until one is)
  document.addEventListener("focusin", (e) => {
    const group = groupOf(e.target);
    if (group && groupOf(e.relatedTarget) !== group) {
      picked.delete(group);
      settle(group);
      if (e.target.matches(":focus-visible")) say(group, KEYS);
    }
  }, true);
  document.addEventListener("focusout", (e) => {
    const group = groupOf(e.target);
    if (group && groupOf(e.relatedTarget) !== group) { picked.delete(group); settle(group); }
  }, true);
  window.addEventListener("keydown", (e) => {
    const group = groupOf(e.target);
    if (!group || e.altKey || e.ctrlKey || e.metaKey) return;
    // Tab from an answered drawing's answers goes to Clear, the next drawing's first step: nothing focusable
    // follows them on the page, and the focus left it, the next Tab beginning at its top (a tour)
    if (e.key === "Tab" && !e.shiftKey && group.querySelector('[role="radio"][aria-checked="true"]')) {
      const to = [...document.querySelectorAll(CLEAR)].find(b => !b.disabled && b.offsetParent !== null);
      if (to) { e.preventDefault(); to.focus(); }
      return;
    }
    if (MOVES.has(e.key)) {  // the radio group moves the focus on arrows; Home and End here
      picked.add(group);
      settle(group);
      if (e.key === "Home" || e.key === "End") {
        const all = radios(group);
        const to = e.key === "Home" ? all[0] : all[all.length - 1];
        if (to) { e.preventDefault(); to.focus(); }
      }
      return;
    }
    if (/^[0-9]$/.test(e.key)) {  // the digit typed: its answer
      const to = radios(group).find(r => r.textContent.trim() === e.key);
      if (to) { e.preventDefault(); picked.add(group); settle(group); to.focus(); }
      return;
    }
    if ((e.key === " " || e.key === "Enter") && !picked.has(group)) {
      e.preventDefault();
      e.stopImmediatePropagation();
      held = e.key;
      say(group, HINT);
    }
  }, true);
  window.addEventListener("keyup", (e) => {
    if (held !== null && e.key === held) {
      held = null;
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);
})();
</script>"""

_STROKE_SETTLES = """<script>
(() => {
  if (window.__dlStrokeSettles) return;
  window.__dlStrokeSettles = true;
  const GROUP = %(groups)s.join(", ");
  const DEFERRED = %(deferred)s.join(", ");
  const CLEAR = %(clear)s;
  const HINT = %(hint)s;
  const TOOLS = %(tools)s.join(", ");
  const TOOL_HINT = %(tool_hint)s;
  let drawing = false, lifted = 0, through = false;
  // an Undo or Clear carried out: until the page shows another picture, the answers on it are the earlier
  // picture's (an answer clicked 0.2 s after Undo labelled the drawing, then a further stroke took it over
  // with that answer; one clicked after Clear labelled the cleared drawing: a newcomer's tour, session 30)
  // `seen`: another picture showed since (a blank canvas after Clear): the same picture back again (Compare the
  // digit from Draw after Clear) is the new one, and an answer held till then was dropped (a tour, session 31)
  let tool = null;
  window.addEventListener("click", (e) => {
    const el = e.target instanceof Element ? e.target.closest(TOOLS) : null;
    if (!el || el.matches(":disabled")) return;
    const mine = tool = {at: Date.now(), before: shown(), seen: false};
    const watch = setInterval(() => {
      if (tool !== mine || Date.now() - mine.at > %(wait)d) clearInterval(watch);
      else if (shown() !== mine.before) { mine.seen = true; clearInterval(watch); }
    }, 50);
  }, true);
  const changing = () => tool !== null && !tool.seen && Date.now() - tool.at < %(wait)d && shown() === tool.before;
  let clearing = null;  // a deferred Clear: carried out as soon as a new stroke begins
  const onCanvas = (e) => e.composedPath().some(n => n instanceof HTMLCanvasElement);
  window.addEventListener("pointerdown", (e) => {
    if (onCanvas(e)) {
      drawing = true;
      const clear = clearing;
      clearing = null;
      if (clear) clear();  // (waiting for this stroke's end too, it wiped the digit drawn after the click)
      return;
    }
    if (drawing) { drawing = false; lifted = Date.now(); liftShown = shown(); }  // a pointer-up we did not see
  }, true);
  // the reading shown as the last stroke ended: one shown after it, once the page is idle, is that stroke's
  let liftShown = null;
  const lift = () => { if (drawing) { drawing = false; lifted = Date.now(); liftShown = shown(); } };
  window.addEventListener("pointerup", lift, true);
  window.addEventListener("pointercancel", lift, true);
  const busy = () => drawing || Date.now() - lifted < (window.__dlSettleMs || %(settle)d);  // (a test may stretch it)
  const idle = () => {  // Streamlit runs no script: the reading shown is the latest the page will get
    const state = document.querySelector('[data-testid="stApp"]')?.getAttribute("data-test-script-state");
    return !state || state === "notRunning";
  };
  const ANSWER_WAIT_MS = %(wait)d;
  let downOn = null;  // {label, at}: the answer a held press began on
  const shown = () => document.querySelector("[data-drawing]")?.getAttribute("data-drawing") || null;
  for (const type of ["pointerdown", "mousedown", "touchstart", "pointerup", "mouseup", "touchend", "click"]) {
    window.addEventListener(type, (e) => {
      const el = e.target instanceof Element ? e.target : null;
      if (!el || through) return;
      const group = el.closest(GROUP);
      const held = group && changing();
      if (!busy() && !held) return;
      const later = group ? null : el.closest(DEFERRED);
      if (!group && !later) return;
      // a touch cancelled makes no click, and the click is what tells the answer (or carries out Undo or Clear):
      // a tap as the finger lifted was lost on phones (15 of 16, a newcomer's tour, session 32)
      if (!type.startsWith("touch")) e.preventDefault();
      e.stopImmediatePropagation();
      if (later) {  // carried out once the stroke has been reported
        // (Undo and Clear stay disabled until the page hears of a first stroke: a click on them then sends
        // pointer events only, no click, and was lost; the person drew on over the stroke they meant to clear)
        const off = later.matches(":disabled");
        if (type === "click" || (type === "pointerup" && off)) {
          // the same control after the page's next run (a rerun may have rebuilt it): by its key or its link
          const keyed = [...(later.closest('[class*="st-key-"]')?.classList || [])].find(c => c.startsWith("st-key-"));
          const href = later.getAttribute("href");
          const find = () => later.isConnected ? later
            : keyed ? document.querySelector(`.${CSS.escape(keyed)} button`)
            : href ? document.querySelector(`a[href="${CSS.escape(href)}"]`) : null;
          let done = false;
          const go = () => {
            if (done) return;
            done = true;
            const target = find();
            if (!target) return;
            through = true;  // (the click goes through, busy or not)
            try { target.click(); } finally { through = false; }
          };
          const until = Date.now() + 3000;
          const again = () => {
            if (done) return;
            const target = find();
            if (busy() || (target && target.disabled && Date.now() < until)) { setTimeout(again, 100); return; }
            go();
          };
          if (later.closest(CLEAR)) clearing = go;
          setTimeout(again, 100);
        }
        return;
      }
      const radios = group.querySelector('[role="radiogroup"]') || group;
      radios.setAttribute("data-dl-pick-hint", held && !busy() ? TOOL_HINT : HINT);
      radios.removeAttribute("data-dl-by-keys");
      setTimeout(() => radios.removeAttribute("data-dl-pick-hint"), 4000);
      const pressed = (el.closest('[role="radio"]')?.textContent || "").trim();
      if (type !== "click") {  // the answer the finger or button went down on: a tap's click can come on the
        if (pressed) downOn = {label: pressed, at: Date.now()};  // group around it (the hint changed the pills)
        return;
      }
      const label = pressed || (downOn && Date.now() - downOn.at < 1500 ? downOn.label : "");
      downOn = null;
      if (!label) return;
      // the answer is given to the new reading once it shows (the same answers, for the same model, under
      // a picture of another digest); never to the picture before, and never a second time (a second click
      // on a picked answer takes it back)
      const index = [...document.querySelectorAll(GROUP)].indexOf(group);
      // clicked as the new reading had just come (0.4-0.6 s after the pen lifted, within the settle time): it
      // was waited for a further reading that never came, and dropped (3 of 4 in a newcomer's tour, session 31)
      const before = shown(), until = Date.now() + ANSWER_WAIT_MS, afterLift = busy() ? liftShown : undefined;
      const viaTool = held ? tool : null;  // held for Undo or Clear: the picture after it, even the same one
      // the hint goes once the answer is given (or given up): it stayed under "Saved: you drew a 9" (a tour, session 32)
      const unhint = () => document.querySelectorAll("[data-dl-pick-hint]").forEach(g => g.removeAttribute("data-dl-pick-hint"));
      const answer = () => {
        if (Date.now() > until) { unhint(); return; }
        const now = shown();
        const come = now !== before || (afterLift !== undefined && now !== afterLift && idle()) || !!viaTool?.seen;
        if (busy() || changing() || now === null || !come) { setTimeout(answer, 100); return; }
        const target = [...document.querySelectorAll(GROUP)][index];
        const radio = target && [...target.querySelectorAll('[role="radio"]')].find(r => r.textContent.trim() === label);
        if (radio && radio.getAttribute("aria-checked") !== "true") radio.click();
        unhint();
      };
      setTimeout(answer, 100);
    }, true);
  }
})();
</script>"""

_ENTER_CONFIRMS = """<script>
(() => {
  if (window.__dlEnterConfirms) return;
  window.__dlEnterConfirms = true;
  window.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.repeat || e.isComposing || e.shiftKey || e.altKey || e.ctrlKey || e.metaKey) return;
    const box = e.target;
    const form = box instanceof HTMLInputElement ? box.closest(%(form)s) : null;
    if (!form) return;
    // after the text box's own Enter (this listener runs first): it hands the typed text over, then the
    // click sends it with the button's press, in one run
    setTimeout(() => {
      const button = form.querySelector(%(button)s);
      if (button && button.isConnected && !button.disabled) button.click();
    }, 0);
  }, true);
  // a phone gives the digits-only box its number pad, not letters (Streamlit's text box has no inputmode)
  const numeric = () => {
    for (const input of document.querySelectorAll(%(form)s + " input")) {
      if (input.getAttribute("inputmode") !== "numeric") {
        input.setAttribute("inputmode", "numeric");
        input.setAttribute("pattern", "[0-9]*");
        input.setAttribute("autocomplete", "off");
      }
    }
  };
  numeric();
  setInterval(numeric, 250);
})();
</script>"""


#: the phone's page menu (Streamlit's sidebar, over the page on a narrow screen) and its close button
MENU_LINK = '[data-testid="stSidebarNavLink"]'
MENU_CLOSE = '[data-testid="stSidebarCollapseButton"] button'

_MENU_CLOSES = """<script>
(() => {
  if (window.__dlMenuCloses) return;
  window.__dlMenuCloses = true;
  // on a narrow screen the page menu opens over the page and stayed open over the page picked (a newcomer's
  // tour, session 34; Streamlit closes it for phones it recognises): a link picked there closes it; beside the
  // page (a wide screen) it stays
  window.addEventListener("click", (e) => {
    const link = e.target instanceof Element ? e.target.closest(%(link)s) : null;
    if (!link) return;
    const menu = link.closest('[data-testid="stSidebar"]');
    const main = document.querySelector('[data-testid="stMain"]');
    if (!menu || !main || menu.getBoundingClientRect().right <= main.getBoundingClientRect().left + 1) return;
    setTimeout(() => {
      const close = document.querySelector(%(close)s);
      if (close && close.getAttribute("aria-expanded") !== "false") close.click();
    }, 0);
  });
})();
</script>"""

#: Undo on a one-stroke drawing (or Clear) disables the button that has the keyboard's focus: it fell to the page,
#: and the next Tab began again at "Skip to main content" (a tour, session 45). It goes to the first tool still
#: enabled (Pen) once the page has answered.
_TOOL_KEEPS_FOCUS = """<script>
(() => {
  if (window.__dlToolFocus) return;
  window.__dlToolFocus = true;
  const TOOLS = %(tools)s.join(", ");
  document.addEventListener("click", (e) => {
    const button = e.target instanceof Element ? e.target.closest(TOOLS) : null;
    const row = button && button.closest('[class*="_tools"]');
    if (!row || document.activeElement !== button) return;
    const keep = () => {
      if (document.activeElement && document.activeElement !== document.body) return;
      const to = [...row.querySelectorAll("button")].find(b => !b.disabled && b.offsetParent !== null);
      if (to) to.focus();
    };
    [250, 700, 1500, 3000].forEach(t => setTimeout(keep, t));
  }, true);
})();
</script>"""

SCRIPTS = (
    _ANSWER_KEYS % {"groups": json.dumps(list(ANSWER_GROUPS)), "hint": json.dumps(PICK_HINT), "keys": json.dumps(KEYS_HINT),
                    "clear": json.dumps(CLEAR_BUTTON)}
    + _STROKE_SETTLES
    % {"groups": json.dumps(list(ANSWER_GROUPS)), "deferred": json.dumps(list(DEFERRED)),
       "hint": json.dumps(SETTLE_HINT), "settle": STROKE_SETTLE_MS, "wait": ANSWER_WAIT_MS,
       "clear": json.dumps(CLEAR_BUTTON), "tools": json.dumps(list(TOOLS)), "tool_hint": json.dumps(TOOL_HINT)}
    + _ENTER_CONFIRMS % {"form": json.dumps(ENTER_FORM), "button": json.dumps(ENTER_BUTTON)}
    + _MENU_CLOSES % {"link": json.dumps(MENU_LINK), "close": json.dumps(MENU_CLOSE)}
    + _TOOL_KEEPS_FOCUS % {"tools": json.dumps(list(TOOLS))}
)
