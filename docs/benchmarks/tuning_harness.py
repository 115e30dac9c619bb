"""Tuning harness: the extractive-tier answers of a release on golden suites, through the gateway's own pipeline.

    python docs/benchmarks/tuning_harness.py CONFIG_DIR HOME:SUITE [HOME:SUITE ...] [--misses]

HOME: an $AGENIX_HOME with a live index; SUITE: a golden-suite file (empty: the home's own). TUNE_RULES / TUNE_ANS
(JSON) replace the extractive rules / answerer options, TUNE_GLOSSARY the glossary file."""
import asyncio, os, sys, json, time
from pathlib import Path
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from agenix_assets.eval_cli import resolve_target
from agenix_assets.core.golden import load_golden
from serving.pipeline import RagPipeline
from serving.evaluation import EvalTarget, evaluate_release
from agenix_assets.core.retrieval import default_encoder

cfg = Path(sys.argv[1]); pairs = [a for a in sys.argv[2:] if not a.startswith("--")]
show = "--misses" in sys.argv
enc = default_encoder()
out = {}
for pair in pairs:
    home, suite_path = pair.split(":", 1)
    home = Path(home); os.environ["AGENIX_HOME"] = str(home)
    suite_path = Path(suite_path) if suite_path else home / "landing/_manifest/golden/support-assistant.yaml"
    suite = load_golden(suite_path, "support-assistant")
    c = resolve_target(cfg, home, "support-assistant", None, {})
    pipe = RagPipeline.from_config(cfg, home, "support-assistant", encoder=enc)
    if os.environ.get("TUNE_RULES") or os.environ.get("TUNE_ANS"):
        from serving.extractive import ExtractiveAnswerer, SelectionRules
        pipe._extractive = ExtractiveAnswerer(enc, rules=SelectionRules(**json.loads(os.environ.get("TUNE_RULES") or "{}")),
                                              **json.loads(os.environ.get("TUNE_ANS") or "{}"))
    if os.environ.get("TUNE_GLOSSARY"):
        from serving.glossary import load_glossary
        pipe.glossary = load_glossary(os.environ["TUNE_GLOSSARY"])
    t = EvalTarget("candidate", c.release(None), retrieval=c.retrieval)
    pipe.warm_up(t.release.index_version)
    run = asyncio.run(evaluate_release(pipe, t, suite))
    asyncio.run(pipe.close())
    s = run.summary
    name = f"{home.name}:{suite_path.name}"
    qa = [r for r in run.records if r["kind"] == "qa"]
    hp = [r for r in qa if r["split"] == "holdout" and r["phrasing"] == "paraphrase"]
    ans = [r for r in qa if r["answerable"]]; un = [r for r in qa if not r["answerable"]]
    f = lambda rs: round(sum(r["correct"] for r in rs) / max(1, len(rs)), 3)
    out[name] = dict(acc=f(qa), holdout_para=f(hp), answerable=f(ans), refusal=f(un), n=len(qa), p95=s.get("latency_p95_ms"), conv=s.get("conversation_pass_rate"))
    print(name, out[name], flush=True)
    if show:
        for r in qa:
            if not r["correct"]:
                print(f"  MISS {r['id']} ans={r['answerable']} Q: {r['question']}\n     E: {r['expected_facts']}  A: {r['answer'][:160]}")
print(json.dumps(out, indent=1))
