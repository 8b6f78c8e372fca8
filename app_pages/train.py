"""Train: launch small pretraining runs as CLI subprocesses, watch them live, cancel them."""

from pathlib import Path

import pandas as pd
import streamlit as st

from smu_explain import appstate as A
from smu_explain import charts, readable
from smu_explain.checkpoint import is_checkpoint
from smu_explain.cli_setup import MUSIC_SUFFIXES
from smu_explain.errors import SMUInputError
from smu_explain.limits import is_whole
from smu_explain.markup import md_escape
from smu_explain.names import SIZES, STRATEGIES
from smu_explain.runs import time_left, training_allowed

st.title("Train a small model")
st.caption("Each run is a separate `smu pretrain` process: it keeps going if you close the tab or "
           "restart the app, and its folder is selectable as a model once it has saved weights.")

allowed, why_not = training_allowed(st.get_option("server.address"))
if not allowed:
    st.info(why_not)
    st.stop()

try:
    registry = A.get_registry()
except SMUInputError as e:
    st.error(f"The run registry cannot be opened: {md_escape(e)}")
    st.stop()

with st.form("train_form"):
    c1, c2, c3, c4 = st.columns([2, 3, 1, 1])
    strategy = c1.selectbox("Masking strategy", STRATEGIES, index=STRATEGIES.index("adversarial"),
                            key="train_strategy")
    data_choice = c2.radio("Data", ["sample_midi/", "a folder"], horizontal=True, key="train_data_choice")
    folder = c2.text_input("Folder of MIDI files (when 'a folder')", value="", key="train_folder")
    size = c3.selectbox("Size", [s for s in SIZES if s != "base"], key="train_size")
    # 30 steps of the tiny model: about a minute on a 2-core machine (sample_midi/ is one batch a step)
    steps = int(c4.number_input("Steps", 1, 100_000, 30, step=10, key="train_steps",
                                help="Each step is one batch. The tiny model on sample_midi/ takes about 2 s "
                                     "a step on a 2-core machine: 30 steps are about a minute."))
    submitted = st.form_submit_button("Start run", type="primary")


def check_has_music(folder: str, look_at: int = 10_000) -> None:
    """``SMUInputError`` when an existing ``folder`` surely holds no MIDI or score file (none in it
    or its sub-folders, as ``smu pretrain`` reads it), before a run is started only to fail; a
    missing folder is left to ``submit`` (its own message), a folder too big to look through
    (``look_at`` entries) to the run."""
    path = Path(folder).expanduser()
    try:
        if not path.is_dir():
            return
        for i, f in enumerate(path.rglob("*")):
            if i >= look_at or (f.suffix.lower() in MUSIC_SUFFIXES and f.is_file()):
                return
    except (OSError, RuntimeError, ValueError):  # unreadable: the run says why
        return
    raise SMUInputError(folder, "no MIDI or score files in this folder")


if submitted:
    data = A.SAMPLE_DIR if data_choice == "sample_midi/" else folder.strip()  # submit() checks the path
    if data_choice == "a folder" and not folder.strip():
        st.error("Type the path of a folder of MIDI files.")
    else:
        try:
            check_has_music(data)
            # about 100 progress lines per run for the live curves; no terminal bar in the log
            run = registry.submit(strategy=strategy, data=data, config=size, steps=steps,
                                  log_every=max(1, steps // 100), no_bar=True)
        except SMUInputError as e:
            st.error(f"Cannot start the run: {md_escape(e)}")
        else:
            st.session_state["train_watch"] = run.id
            st.session_state["train_watch_select"] = run.id  # the started run is the one watched
            st.session_state["train_submitted"] = run.id  # said by the runs view while it waits or runs


def data_note(records: list[dict], named: int = 3) -> str:
    """What a run's progress file says about its data (the start record's ``data``, written by
    ``smu pretrain``), for its status line (Markdown, escaped): the files it skipped as unusable (the
    first ``named`` with their reasons) and a training set smaller than one batch; '' when neither."""
    start = next((r for r in records if r.get("event") == "start"), None)
    data = start.get("data") if start else None
    if not isinstance(data, dict):
        return ""
    parts = []
    n = data.get("skipped")
    if is_whole(n) and n > 0:
        files = [f for f in data.get("skipped_files") or [] if isinstance(f, list) and len(f) == 2][:named]
        listed = [f"{md_escape(Path(str(name)).name)}: {md_escape(str(why))}" for name, why in files]
        if n > len(listed):
            listed.append(f"and {n - len(listed)} more")
        parts.append(f"{n} unusable file{'s were' if n != 1 else ' was'} skipped ({'; '.join(listed)})")
    windows, asked = data.get("train_windows"), data.get("batch_size_asked")
    if is_whole(windows) and is_whole(asked) and windows < asked:
        parts.append(f"trained on {windows} window{'s' if windows != 1 else ''} of notes, fewer than one batch "
                     f"of {asked}")
    return "; ".join(parts)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s} s" if s < 90 else f"{s // 60} min {s % 60:02d} s"


def cancel(run_id: str) -> None:
    """The Cancel button's callback (run before the runs view reruns)."""
    registry.cancel(run_id, wait=False)
    st.toast(f"Cancelling {run_id}...")


@st.fragment(run_every="1s")
def live_runs():
    runs = registry.poll()
    skipped = registry.skipped()
    if skipped:
        st.warning(f"{len(skipped)} folder(s) in the runs folder were skipped: their records are not usable "
                   "(nothing in them is run or signalled).")
        st.dataframe(pd.DataFrame(skipped[:50], columns=["folder", "reason"]), hide_index=True)
    if not runs:
        st.info("No runs yet. Start one above.")
        return
    # the run submitted last, said while it waits or runs: this view reruns alone (every second, on
    # Cancel), so a message drawn with the form would stay after the run was cancelled or started
    submitted = next((r for r in runs if r.id == st.session_state.get("train_submitted")), None)
    if submitted is not None and submitted.status == "queued":
        st.info(f"Run {submitted.id} is queued: {registry.max_concurrent} run(s) at a time "
                "(SMU_MAX_RUNS). It starts when a slot frees.")
    elif submitted is not None and submitted.status == "running":
        st.success(f"Started run {submitted.id}.")
    table = pd.DataFrame([{
        "run": r.id, "status": r.status,
        "strategy": r.params.get("strategy"), "size": r.params.get("config"),
        "steps": r.params.get("steps"), "created": str(r.created or "")[:16].replace("T", " "),
    } for r in reversed(runs)])
    table = readable.display_table(table)  # "-" for a missing value, never "None"
    queued = [r for r in runs if r.status == "queued"]
    st.markdown(f"**Runs** ({sum(r.status == 'running' for r in runs)} running, "
                f"{len(queued)} queued, at most {registry.max_concurrent} at a time)")
    st.dataframe(table, hide_index=True, width="stretch")
    if queued:
        st.caption("Queue (starts in this order): " + ", ".join(r.id for r in queued))

    ids = [r.id for r in reversed(runs)]
    watch = st.session_state.get("train_watch")
    idx = ids.index(watch) if watch in ids else 0
    run_id = st.selectbox("Watch run", ids, index=idx, key="train_watch_select")
    st.session_state["train_watch"] = run_id
    run = next(r for r in runs if r.id == run_id)

    b1, b2, b3 = st.columns([1, 1, 4])
    if run.status in ("running", "queued"):  # cancelled before this view reruns, so it shows the new state
        b1.button("Cancel run", key=f"cancel_{run.id}", on_click=cancel, args=(run.id,))
    out = Path(run.out_dir)
    has_model = not out.is_symlink() and is_checkpoint(out)
    if run.status == "done" and has_model:
        if b2.button("Open in Explore", key=f"open_{run.id}"):
            st.session_state[A.K_MODEL_A] = str(out)
            try:
                st.switch_page("app_pages/explore.py")
            except Exception:  # standalone page (tests): no navigation to switch in
                st.info(f"Model set to {out}; open the Explore page.")
        b3.caption(f"Model folder: `{out}` (choose it on Explore or Compare)")

    msg = f"Status: **{run.status}**"
    if run.message:
        msg += f" - {md_escape(run.message)}"
    records = registry.progress(run.id)
    if run.status in ("running", "done", "cancelled") and (said := data_note(records)):
        msg += f" - {said}"
    if run.cancel_requested and run.status == "running":
        msg += " (cancel requested)"
    st.markdown(msg)

    progress = charts.progress_frame(records)
    total = run.params.get("steps") or 0
    if len(progress) and total:
        done = int(progress["step"].max())
        left = time_left(records, total) if run.status == "running" else None
        eta = "" if left is None else f" - about {_duration(left)} left"
        st.progress(min(1.0, done / total), text=f"step {done} / {total}{eta}")
    if len(progress) or run.status in ("queued", "running"):
        c1, c2 = st.columns(2)
        with c1:
            st.plotly_chart(charts.loss_curves(progress), key=f"loss_{run.id}",
                            config={"displaylogo": False})
        with c2:
            st.plotly_chart(charts.masker_stats_figure(progress), key=f"masker_{run.id}",
                            config={"displaylogo": False})
    elif run.status == "failed":  # no empty charts saying "no progress yet" for a run that is over
        st.caption("The run failed before its first training step: there is no progress to show.")
    if run.status == "failed":
        st.error(f"The run failed: {md_escape(run.message)}")
        st.markdown("Last lines of its log:")
        st.code(registry.log_tail(run.id, 30) or "(empty log)", language="text")
    elif run.status in ("running", "cancelled"):
        with st.expander("Log"):
            st.code(registry.log_tail(run.id, 15) or "(empty log)", language="text")


live_runs()
