"""Helpers for the streaming browser tests: record every state of the chat log the page goes through.

A MutationObserver, installed before the page's own script runs, snapshots ``#log`` after every DOM
change: each streaming bubble (turn id, text) and each final reply bubble (turn id, text), plus the
log's whole visible text. The tests then assert on the sequence of frames, i.e. on everything a
customer could have seen, not only on the page's last state.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

RECORDER = """
(() => {
  window.__frames = [];
  const snap = () => {
    const log = document.getElementById('log');
    if (!log) return;
    const items = [...log.children].map((li, i) => ({
      index: i,
      turn_id: li.dataset.turnId || null,
      streaming: li.dataset.streaming === 'yes',
      kind: li.dataset.kind || (li.classList.contains('msg') ? 'message' : ''),
      text: (li.querySelector('.stream-text') || li).innerText,
    }));
    window.__frames.push({t: performance.now(), items, text: log.innerText});
  };
  const start = () => {
    const log = document.getElementById('log');
    if (!log) { setTimeout(start, 20); return; }
    new MutationObserver(snap).observe(log, {childList: true, subtree: true, characterData: true});
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
"""


def install_recorder(page: Page) -> None:
    page.add_init_script(RECORDER)


def frames(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("() => window.__frames")


def stream_texts(all_frames: list[dict[str, Any]], turn_id: str) -> list[str]:
    """The distinct texts the streaming bubble of ``turn_id`` showed, in order (before its final)."""
    out: list[str] = []
    for f in all_frames:
        for item in f["items"]:
            if item["streaming"] and item["turn_id"] == turn_id and (not out or out[-1] != item["text"]):
                out.append(item["text"])
    return out


def final_index(all_frames: list[dict[str, Any]], turn_id: str) -> int | None:
    """The first frame showing the final reply of ``turn_id``."""
    for i, f in enumerate(all_frames):
        if any(not it["streaming"] and it["turn_id"] == turn_id for it in f["items"]):
            return i
    return None


def both_at_once(all_frames: list[dict[str, Any]], turn_id: str) -> bool:
    """True if some frame showed the streaming bubble and the final of the same turn together."""
    for f in all_frames:
        mine = [it for it in f["items"] if it["turn_id"] == turn_id]
        if any(it["streaming"] for it in mine) and any(not it["streaming"] for it in mine):
            return True
    return False


def dropped(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("() => window.supportflowChat.droppedDeltas")
