"""The builder: a Dockerfile and a context in, an image out, one step at a time.

This is docker's classic builder, step for step. Lifecycle of one build::

    Builder(engine, context, tags=..., buildargs=..., target=..., nocache=...)
      .build()
        1. parse the Dockerfile (build/dockerfile.py); split it into the
           global ARGs and the stages (each starts with FROM); pick the
           stages the target needs (FROM <stage>, COPY --from=<stage>)
        2. for each needed stage, for each instruction:
             - substitute variables (build/expand.py) where the reference says
             - work out the new image config and the step's CacheKey
             - CACHED: reuse the image an earlier build made (build/cache.py),
               or miss, say why, and do the step:
                 RUN         a real container from the current image, through the
                             same runtime as ``dockyard run``; its writable layer
                             becomes the step's layer; the container is removed
                 COPY / ADD  the files packed from the context (build/context.py)
                             or another stage (rootfs.pack_from_image), unpacked
                             into the image in a chroot (build/rootfs.py)
                 WORKDIR     mkdir -p, the same way
                 the rest    metadata only: config changes, no layer
             - commit the step as a child image (image/child.py): one history
               entry, plus a layer if files changed (else ``empty_layer``)
        3. ``--label``s as a last LABEL step, then the tags, all at once:
           a failed build tags nothing

Every step makes an image whose parent is the previous step's image, so
``images -a`` shows them (untagged intermediate images) and ``history``
shows one row per instruction, as the seeds describe.

Progress is reported as :class:`Event` values to the ``progress`` callback
(only ``cli/`` prints); the result is the image and the list of
:class:`Step` records. Failures raise :class:`BuildError` (a step failed:
exit status 1, as docker) or a ``DockerfileError`` (bad input: 125), both
naming the Dockerfile line. Whatever happens, the intermediate containers
and the scratch directory are removed.
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
import shutil
import time
from dataclasses import dataclass, field

from ..errors import EngineError, ImageNotFound, InvalidReference, SpawnError, UsageError
from ..image import reference, scratch
from . import dockerfile as D
from .cache import BuildCache, CacheKey, sources_checksum
from .context import SourceError, looks_like_archive
from .expand import SubstitutionError, expand, expand_words

DEFAULT_SHELL = ["/bin/sh", "-c"]

# Build arguments every build has without an ARG line (the reference,
# "Predefined ARGs"); they are not written into the image's history.
PREDEFINED_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                   "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


class BuildError(EngineError):
    """A step failed (a RUN exited non-zero, a COPY source is missing...).

    ``step`` is the :class:`Step` that failed, ``output`` what it printed.
    Exit status 1, as ``docker build``.
    """

    exit_code = 1

    def __init__(self, message: str, step: "Step | None" = None, status: int | None = None):
        super().__init__(message)
        self.step = step
        self.status = status
        self.output = step.output if step is not None else b""


@dataclass
class Step:
    """One instruction of the build, as it happened.

    ``cached``: True (reused), False (done now; ``reason`` says why the cache
    missed) or None (FROM, which only picks the base). ``image_id``: the
    image this step produced (for FROM, the base). ``layer``: whether it
    added a filesystem layer. ``output``: what a RUN printed.
    """

    number: int
    total: int
    stage: str
    keyword: str
    instruction: str
    line: int
    cached: bool | None = None
    reason: str | None = None
    output: bytes = b""
    duration: float = 0.0
    image_id: str = ""
    layer: bool = False

    @property
    def title(self) -> str:
        return f"Step {self.number}/{self.total} : {self.instruction}"


@dataclass(frozen=True)
class Event:
    """What the builder reports while it works (for a progress display).

    kinds: ``context`` (data: bytes in the context), ``note`` (data: text),
    ``step`` (a step starts), ``cache`` (hit or miss, see ``step.cached`` /
    ``step.reason``), ``running`` (data: the intermediate container's ID),
    ``output`` (data: bytes a RUN printed), ``removed`` (data: container ID),
    ``done`` (a step finished: ``step.image_id``, ``step.duration``),
    ``tagged`` (data: the tag).
    """

    kind: str
    step: Step | None = None
    data: object = None


@dataclass
class _Stage:
    index: int
    name: str | None
    from_: D.Instruction
    instructions: list
    image: object = None   # the image the stage's last step made


@dataclass
class _State:
    """A stage's state while its steps run."""
    image: object
    config: dict
    args: dict = field(default_factory=dict)       # ARGs in scope: name -> value
    cmd_set: bool = False                          # CMD given in this stage (ENTRYPOINT keeps it)
    author: str | None = None
    changed: bool = False                          # a step of this stage missed the cache


class Builder:
    """One build; see the module docstring for its lifecycle."""

    def __init__(self, engine, context, *, tags=(), buildargs=None, target: str | None = None,
                 nocache: bool = False, labels=None, network_mode: str | None = None,
                 progress=None):
        from ..runtime import options

        self.engine = engine
        self.context = context
        self.tags = [str(reference.parse(t)) for t in tags or ()]  # refuse bad names first
        for t in self.tags:
            if t == scratch.SCRATCH:
                raise UsageError("'scratch' is a reserved name")
        self.buildargs = dict(buildargs or {})
        self.target = target
        self.nocache = nocache
        self.labels = options.parse_labels(labels) if labels else {}
        # RUN steps get no network unless asked: Dockyard never routes a container to
        # the outside, so docker's default bridge would give a RUN only loopback's worth.
        self.network_mode = "bridge" if network_mode == "default" else (network_mode or "none")
        if self.network_mode not in ("none", "host", "bridge"):
            raise UsageError(f"network mode {network_mode!r} is not supported for builds: "
                             "use none (the default), host or bridge")
        self.progress = progress or (lambda event: None)
        self.steps: list[Step] = []
        self.used_args: set[str] = set()
        self.filename = os.path.basename(context.dockerfile_name) or "Dockerfile"
        self.scratch_dir = None
        self._containers = []
        self._downloads: dict[str, tuple] = {}  # ADD <url>: fetched once per build

    # -- the whole build ----------------------------------------------------------

    def build(self):
        """Run the build; return ``(image, steps)``."""
        dockerfile = D.parse(self.context.dockerfile_text, self.filename)
        if dockerfile.syntax:
            self._emit("note", data=f"# syntax={dockerfile.syntax} is accepted and ignored: "
                                    "Dockyard has one built-in Dockerfile frontend")
        for warning in dockerfile.warnings:
            self._emit("note", data=f"[Warning] {warning}")
        self.escape = dockerfile.escape
        meta_args, stages = self._split(dockerfile)
        needed = self._needed(stages, meta_args)
        total = sum(1 + len(s.instructions) for s in stages if s.index in needed) + bool(self.labels)
        self._emit("context", data=self.context.size if self.context.root is not None else 0)
        self._preflight(stages, needed, meta_args, total)
        self.cache = BuildCache(self.engine.image_store)
        self.engine.layout.builds.mkdir(parents=True, exist_ok=True)
        self.scratch_dir = str(self.engine.layout.builds / f"{os.getpid()}-{os.urandom(6).hex()}")
        os.makedirs(self.scratch_dir, mode=0o700)
        number = 0
        try:
            for stage in stages:
                if stage.index not in needed:
                    continue
                number = self._build_stage(stage, stages, meta_args, number, total)
            final = stages[max(needed)]
            image = final.image
            if self.labels:
                number += 1
                image = self._label_step(final, image, number, total)
            unused = sorted(set(self.buildargs) - self.used_args - set(PREDEFINED_ARGS))
            if unused:
                self._emit("note", data=f"[Warning] One or more build-args {unused} were not consumed")
            for tag in self.tags:
                self.engine.image_store.add(image.manifest_digest, tag)
                self._emit("tagged", data=tag)
            return self.engine.image_store.load(image.manifest_digest), self.steps
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        for container in self._containers:
            try:
                container.reload()  # see _remove_container
                container._remove_quietly()
            except Exception:  # noqa: BLE001 - best effort; the build's own error matters more
                pass
        if self.scratch_dir:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def _emit(self, kind: str, step: Step | None = None, data=None) -> None:
        self.progress(Event(kind, step, data))

    def _fail(self, ins: D.Instruction, reason: str) -> D.DockerfileError:
        return D.DockerfileError(self.filename, ins.start_line, reason)

    # -- stages -------------------------------------------------------------------

    def _split(self, dockerfile) -> tuple[dict, list[_Stage]]:
        """The ARGs before the first FROM (with their defaults) and the stages."""
        meta_args: dict[str, str | None] = {}
        stages: list[_Stage] = []
        for ins in dockerfile:
            if ins.keyword == "FROM":
                stages.append(_Stage(len(stages), ins.stage_name, ins, []))
            elif not stages:  # the parser allows only ARG before the first FROM
                for word in ins.args:
                    name, eq, default = word.partition("=")
                    value = None
                    if eq:
                        value = self._expand(ins, default, {k: v for k, v in meta_args.items() if v is not None})
                    meta_args[name] = self.buildargs.get(name, value)
                    if name in self.buildargs:
                        self.used_args.add(name)
            else:
                stages[-1].instructions.append(ins)
        names = {}
        for stage in stages:
            if stage.name is not None:
                if stage.name in names:
                    raise self._fail(stage.from_, f"duplicate stage name {stage.name!r}")
                names[stage.name] = stage.index
        return meta_args, stages

    def _stage_ref(self, stages: list[_Stage], name: str, before: int) -> _Stage | None:
        """The stage ``name`` (a name, or an index as COPY --from=0 allows) refers to, if any."""
        lowered = name.lower()
        for stage in stages[:before]:
            if stage.name == lowered or (name.isdigit() and int(name) == stage.index):
                return stage
        return None

    def _needed(self, stages: list[_Stage], meta_args: dict) -> set[int]:
        """The stages the target needs: itself and what it copies from or builds on."""
        if self.target is not None:
            target = next((s for s in stages if s.name == self.target.lower()), None)
            if target is None:
                raise UsageError(f"failed to reach build target {self.target} in Dockerfile")
        else:
            target = stages[-1]
        needed, todo = set(), [target]
        while todo:
            stage = todo.pop()
            if stage.index in needed:
                continue
            needed.add(stage.index)
            base = self._from_name(stage.from_, meta_args)
            ref = self._stage_ref(stages, base, stage.index)
            if ref is not None:
                todo.append(ref)
            for ins in stage.instructions:
                source = ins.flags.get("from") if ins.keyword == "COPY" else None
                if source:
                    source = self._expand(ins, source, self._defined(meta_args))
                    ref = self._stage_ref(stages, source, stage.index)
                    if ref is not None:
                        todo.append(ref)
                    elif self._stage_ref(stages, source, len(stages)) is not None:
                        raise self._fail(ins, f"COPY --from={source}: a stage can only copy from "
                                              "stages defined before it")
        return needed

    @staticmethod
    def _defined(args: dict) -> dict:
        return {k: v for k, v in args.items() if v is not None}

    def _from_name(self, ins: D.Instruction, meta_args: dict) -> str:
        name = self._expand(ins, ins.args[0], self._defined(meta_args))
        if not name:
            raise self._fail(ins, "FROM requires an image name (the ARG it uses is empty)")
        return name

    def _build_stage(self, stage: _Stage, stages, meta_args, number: int, total: int) -> int:
        ins = stage.from_
        number += 1
        step = self._start(number, total, stage, ins)
        base_name = self._from_name(ins, meta_args)
        ref = self._stage_ref(stages, base_name, stage.index)
        base = ref.image if ref is not None else self._base_image(ins, base_name)
        if ins.flags.get("platform"):
            self._emit("note", data=f"FROM --platform={ins.flags['platform']}: Dockyard builds "
                                    "for this machine's platform only")
        state = _State(base, copy.deepcopy(base.run_config))
        self._meta_args = meta_args
        step.image_id = base.id
        self._finish(step, time.monotonic())
        triggers = list(state.config.pop("OnBuild", None) or [])
        if triggers:
            self._emit("note", data=f"# Executing {len(triggers)} build trigger"
                                    f"{'s' if len(triggers) > 1 else ''}")
        for text in triggers:
            try:
                parsed = [_parse_trigger(text, base_name, ins.start_line)]
            except D.DockerfileError as e:
                raise self._fail(ins, str(e)) from None
            for trigger in parsed:
                self._dispatch(stage, state, stages, trigger, None, total)
        for ins in stage.instructions:
            number += 1
            self._dispatch(stage, state, stages, ins, number, total)
        stage.image = state.image
        return number

    def _base_image(self, ins: D.Instruction, name: str):
        try:
            return self.engine.images.get_or_pull(name)
        except (ImageNotFound, InvalidReference) as e:
            raise self._fail(ins, f"FROM {name}: {e}") from None

    def _preflight(self, stages: list[_Stage], needed: set[int], meta_args: dict, total: int) -> None:
        """Check the whole build before anything runs, so that bad input leaves the store as it was.

        Every needed stage is walked with its config evolving as the steps
        say (RUN never changes the config, so this needs no container):
        base images and stages must exist, substitutions must work, COPY
        sources must be in the context, ports, signals and modes must parse.
        What only a running step can tell (a RUN's exit status, a --chown
        user a RUN creates, files of another stage) is checked when it runs.
        """
        configs: dict[int, dict] = {}
        used = set(self.used_args)
        self._meta_args = meta_args
        for stage in stages:
            if stage.index not in needed:
                continue
            base_name = self._from_name(stage.from_, meta_args)
            ref = self._stage_ref(stages, base_name, stage.index)
            config = copy.deepcopy(configs[ref.index] if ref is not None
                                   else self._base_image(stage.from_, base_name).run_config)
            state = _State(None, config)
            for text in config.pop("OnBuild", None) or []:
                try:
                    triggers = [_parse_trigger(text, base_name, stage.from_.start_line)]
                except D.DockerfileError as e:
                    raise self._fail(stage.from_, str(e)) from None
                for trigger in triggers:
                    self._dispatch(stage, state, stages, trigger, None, total, dry=True)
            for ins in stage.instructions:
                self._dispatch(stage, state, stages, ins, None, total, dry=True)
            configs[stage.index] = state.config
        self.used_args = used  # the real pass records them again

    def _start(self, number, total, stage: _Stage, ins: D.Instruction) -> Step:
        step = Step(number or 0, total, stage.name or f"stage-{stage.index}", ins.keyword,
                    " ".join(ins.original.split()) if "\n" in ins.original else ins.original.strip(),
                    ins.start_line)
        self.steps.append(step)
        self._emit("step", step)
        return step

    def _finish(self, step: Step, started: float) -> None:
        step.duration = time.monotonic() - started
        self._emit("done", step)

    # -- one instruction ------------------------------------------------------------

    def _env(self, state: _State) -> dict:
        """What ``$VAR`` means in this stage: ARGs, overridden by ENV (the reference:
        "Environment variables defined using ENV always override an ARG")."""
        env = dict(state.args)
        for item in state.config.get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def _expand(self, ins: D.Instruction, word: str, env: dict) -> str:
        try:
            return expand(word, env, self.escape if hasattr(self, "escape") else "\\")
        except SubstitutionError as e:
            raise self._fail(ins, str(e)) from None

    def _expand_words(self, ins: D.Instruction, text: str, env: dict) -> list[str]:
        try:
            return expand_words(text, env, self.escape)
        except SubstitutionError as e:
            raise self._fail(ins, str(e)) from None

    def _dispatch(self, stage: _Stage, state: _State, stages, ins: D.Instruction,
                  number: int | None, total: int, dry: bool = False) -> None:
        started = time.monotonic()
        step = Step(0, total, "", ins.keyword, "", ins.start_line) if dry \
            else self._start(number, total, stage, ins)
        self._dry = dry
        env = self._env(state)
        keyword = ins.keyword
        config = copy.deepcopy(state.config)
        author = state.author
        file_step = None   # (kind, details) for steps that write files
        label = keyword
        args_key: tuple = ()
        sources_key, files = "", {}
        shell = config.get("Shell") or DEFAULT_SHELL
        nop = f"{' '.join(shell)} #(nop) "

        if keyword == "ENV":
            updates = [(self._expand(ins, k, env), self._expand(ins, v, env)) for k, v in ins.pairs()]
            for key, value in updates:
                if not key:
                    raise self._fail(ins, "ENV names can not be blank")
                config["Env"] = _set_env(config.get("Env") or [], key, value)
            text = "ENV " + " ".join(f"{k}={v}" for k, v in updates)
            created_by = nop + " " + text
        elif keyword == "LABEL":
            updates = [(self._expand(ins, k, env), self._expand(ins, v, env)) for k, v in ins.pairs()]
            labels = dict(config.get("Labels") or {})
            for key, value in updates:
                if not key:
                    raise self._fail(ins, "LABEL names can not be blank")
                labels[key] = value
            config["Labels"] = labels
            text = "LABEL " + " ".join(f"{k}={v}" for k, v in updates)
            created_by = nop + " " + text
        elif keyword == "MAINTAINER":
            author = ins.args[0]
            text = f"MAINTAINER {author}"
            created_by = nop + " " + text
        elif keyword == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            words = []
            for word in ins.args:
                words += self._expand_words(ins, word, env)
            for word in words:
                for port in _parse_ports(word, lambda reason: self._fail(ins, reason)):
                    ports[port] = {}
            config["ExposedPorts"] = ports
            text = "EXPOSE " + " ".join(sorted(ports))
            created_by = nop + " " + "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(ports)) + "]"
        elif keyword == "VOLUME":
            volumes = dict(config.get("Volumes") or {})
            paths = []
            for word in ins.args:
                paths += [self._expand(ins, word, env)] if ins.json else self._expand_words(ins, word, env)
            for path in paths:
                if not path.strip():
                    raise self._fail(ins, "VOLUME specified can not be an empty string")
                volumes[path] = {}
            config["Volumes"] = volumes
            text = "VOLUME " + json.dumps(paths)
            created_by = nop + " " + text
        elif keyword == "USER":
            user = self._expand(ins, ins.args[0], env)
            config["User"] = user
            text = f"USER {user}"
            created_by = nop + " " + text
        elif keyword == "WORKDIR":
            path = self._expand(ins, ins.args[0], env)
            current = config.get("WorkingDir") or "/"
            workdir = posixpath.normpath(posixpath.join(current, path))
            workdir = "/" + workdir.lstrip("/")
            config["WorkingDir"] = workdir
            text = f"WORKDIR {workdir}"
            created_by = nop + text
            file_step = ("workdir", workdir)
        elif keyword in ("CMD", "ENTRYPOINT"):
            argv = list(ins.args) if ins.json else [*shell, ins.args[0]]
            if keyword == "CMD":
                config["Cmd"] = argv
                state_cmd = True
            else:
                config["Entrypoint"] = argv
                if not state.cmd_set:
                    config["Cmd"] = None  # the reference: ENTRYPOINT resets a CMD from the base image
                state_cmd = state.cmd_set
            text = f"{keyword} {json.dumps(argv)}"
            created_by = nop + " " + text
        elif keyword == "SHELL":
            config["Shell"] = list(ins.args)
            text = f"SHELL {json.dumps(list(ins.args))}"
            created_by = nop + " " + text
        elif keyword == "STOPSIGNAL":
            from ..runtime import options

            signal_text = self._expand(ins, ins.args[0], env)
            try:
                options.signal_number(signal_text)
            except UsageError:
                raise self._fail(ins, f"STOPSIGNAL: invalid signal: {signal_text}") from None
            config["StopSignal"] = signal_text
            text = f"STOPSIGNAL {signal_text}"
            created_by = nop + " " + text
        elif keyword == "HEALTHCHECK":
            config["Healthcheck"] = _healthcheck(ins.healthcheck)
            text = "HEALTHCHECK " + json.dumps(config["Healthcheck"], sort_keys=True)
            created_by = nop + " " + "HEALTHCHECK " + _go_healthcheck(config["Healthcheck"])
        elif keyword == "ONBUILD":
            config["OnBuild"] = [*(config.get("OnBuild") or []), ins.args[0]]
            text = f"ONBUILD {ins.args[0]}"
            created_by = nop + " " + text
        elif keyword == "ARG":
            shown = []
            for word in ins.args:
                name, eq, default = word.partition("=")
                value = self._expand(ins, default, env) if eq else None
                # The step (its cache key and history) shows the default as written,
                # never a --build-arg value (moby's dispatchArg): the RUNs that see the
                # value carry it in their keys, and say "build args changed" when it does.
                shown.append(f"{name}={value}" if value is not None else name)
                if name in self.buildargs:
                    value = self.buildargs[name]
                    self.used_args.add(name)
                elif value is None and self._meta_args.get(name) is not None:
                    value = self._meta_args[name]  # re-declared global ARG: its value
                state.args[name] = value if value is not None else ""
                env[name] = state.args[name]
            text = "ARG " + " ".join(shown)
            created_by = nop + " " + text
        elif keyword == "RUN":
            argv = list(ins.args) if ins.json else [*shell, ins.args[0]]
            run_args = {k: v for k, v in state.args.items()
                        if not any(e.startswith(k + "=") for e in config.get("Env") or [])}
            args_key = tuple(sorted(run_args.items()))
            prefix = f"|{len(args_key)} " + " ".join(f"{k}={v}" for k, v in args_key) + " " if args_key else ""
            text = "RUN " + json.dumps(argv)
            if self.network_mode != "none":  # another network can make another result
                text += f" --network={self.network_mode}"
            created_by = prefix + " ".join(argv)
            # Predefined ARGs (proxies) reach RUN without an ARG line, but stay out
            # of the cache key and the history (the reference, "Predefined ARGs").
            proxies = {k: v for k, v in self.buildargs.items()
                       if k in PREDEFINED_ARGS and k not in run_args}
            file_step = ("run", (argv, {**run_args, **proxies}))
        elif keyword in ("COPY", "ADD"):
            file_step, text, created_by, sources_key, files, label = \
                self._plan_copy(ins, state, stages, stage, env, config, shell)
        else:  # pragma: no cover - the parser knows every keyword
            raise self._fail(ins, f"unknown instruction: {keyword}")

        if dry:  # the preflight: only the config evolves, nothing runs or is stored
            state.config, state.author = config, author
            if keyword == "CMD":
                state.cmd_set = True
            elif keyword == "ENTRYPOINT":
                state.cmd_set = state_cmd
            return
        parent = state.image.manifest_digest
        key = CacheKey(parent, text, args_key, sources_key, files)
        hit = None
        if self.nocache:
            reason = "--no-cache"
        elif state.changed:
            reason = f"{label}: parent changed"
        else:
            hit, reason = self.cache.lookup(key, label)
            if hit is not None:
                try:
                    image = self.engine.image_store.load(hit, tags=[])  # no family lookup: O(1)
                    self.engine.snapshots.ensure(image)
                except EngineError:
                    hit, reason = None, f"{label}: the cached image is damaged"
        if hit is not None:
            step.cached = True
            self._emit("cache", step)
        else:
            step.cached, step.reason = False, reason
            self._emit("cache", step)
            image = self._execute(step, ins, state, config, file_step, created_by, author, key)
            state.changed = True
            self.cache.add(image.manifest_digest, key)
        state.image, state.config, state.author = image, copy.deepcopy(image.run_config), author
        if keyword == "CMD":
            state.cmd_set = True
        elif keyword == "ENTRYPOINT":
            state.cmd_set = state_cmd
        step.image_id = image.id
        history = image.config.get("history") or [{}]
        step.layer = not history[-1].get("empty_layer", False)
        self._finish(step, started)

    # -- COPY and ADD ---------------------------------------------------------------

    def _plan_copy(self, ins, state, stages, stage, env, config, shell):
        """Resolve a COPY/ADD: (file step, cache text, created_by, sources checksum, files, label)."""
        words = list(ins.args)
        srcs = [self._expand(ins, w, env) for w in words[:-1]]
        dest = self._expand(ins, words[-1], env)
        if not dest:
            raise self._fail(ins, f"{ins.keyword}: the destination is empty")
        workdir = config.get("WorkingDir") or "/"
        trailing = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
        dest_path = posixpath.normpath(posixpath.join(workdir, dest))
        if trailing and not dest_path.endswith("/"):
            dest_path += "/"
        chown = ins.flags.get("chown")
        uid = gid = None
        if chown:
            uid, gid = self._resolve_chown(ins, state, self._expand(ins, str(chown), env))
        chmod = ins.flags.get("chmod")
        mode = None
        if chmod:
            try:
                mode = int(str(chmod), 8)
                if not 0 <= mode <= 0o7777:
                    raise ValueError
            except ValueError:
                raise self._fail(ins, f"invalid chmod parameter: {chmod}") from None
        if ins.flags.get("checksum"):
            raise self._fail(ins, "ADD --checksum is not supported by Dockyard")
        label = f"{ins.keyword} {' '.join(srcs)}"
        flags = "".join(f"--{k}={v} " for k, v in sorted(ins.flags.items()) if k != "link")
        text = f"{ins.keyword} {flags}{json.dumps(srcs)} {dest_path}"
        from_stage = ins.flags.get("from") if ins.keyword == "COPY" else None
        if from_stage:
            source_name = self._expand(ins, str(from_stage), env)
            ref = self._stage_ref(stages, source_name, stage.index)
            if ref is not None:
                source_image = ref.image
            else:
                try:
                    source_image = self.engine.images.get_or_pull(source_name)
                except (ImageNotFound, InvalidReference) as e:
                    raise self._fail(ins, f"COPY --from={source_name}: {e}") from None
            many = len(srcs) > 1 or any(c in s for c in "*?[" for s in srcs)
            if many and not dest_path.endswith("/"):
                raise self._fail(ins, "When using COPY with more than one source file, the "
                                      "destination must be a directory and end with a /")
            if self._dry:
                return ("copy-from", None), text, "", "", {}, label
            # The files are packed now, in a chroot of the source image, so that the
            # cache compares what is copied (content and metadata, no mtimes), as
            # docker's classic builder hashes them: a rebuilt stage with the same
            # files still hits.
            from . import rootfs

            pack_dir = os.path.join(self.scratch_dir, f"from-{len(self.steps)}")
            for d in ("upper", "work", "merged"):
                os.makedirs(os.path.join(pack_dir, d), mode=0o755)
            archive = pack_dir + ".tar"
            try:
                found = rootfs.pack_from_image(self._overlay(source_image, pack_dir), srcs, archive,
                                               uid=uid if uid is not None else 0,
                                               gid=gid if gid is not None else 0, mode=mode)
            except (rootfs.FileStepError, OSError) as e:
                raise self._fail(ins, f"COPY --from={source_name} failed: {e}") from None
            finally:
                shutil.rmtree(pack_dir, ignore_errors=True)
            files = _tar_digests(archive)
            details = {"from": source_image, "srcs": srcs, "dest": dest_path, "uid": uid,
                       "gid": gid, "mode": mode, "archive": archive, "found": found}
            created_by = f"{' '.join(shell)} #(nop) COPY --from={source_name} {' '.join(srcs)} in {dest_path} "
            return ("copy-from", details), text, created_by, sources_checksum(files), files, label
        urls = [s for s in srcs if ins.keyword == "ADD" and s.startswith(("http://", "https://"))]
        local = [s for s in srcs if s not in urls]
        sources = []
        try:
            for src in local:
                sources += self.context.resolve(src)
        except SourceError as e:
            raise self._fail(ins, f"{ins.keyword} failed: {e}") from None
        many = len(sources) + len(urls) > 1 or any(any(c in s for c in "*?[") for s in local)
        if many and not dest_path.endswith("/"):
            raise self._fail(ins, f"When using {ins.keyword} with more than one source file, the "
                                  "destination must be a directory and end with a /")
        files = self.context.digests(sources) if sources and not self._dry else {}
        if urls and not self._dry:
            # docker fetches a URL at every build and compares what it got: a
            # changed file at the same URL is a miss (its digest joins the files')
            files = {**files, **{u: self._download(ins, u)[3] for u in urls}}
        checksum = sources_checksum({**{u: "url" for u in urls}, **files})
        details = {"sources": sources, "urls": urls, "dest": dest_path, "uid": uid, "gid": gid,
                   "mode": mode, "many": many}
        kind = "dir" if len(sources) == 1 and sources[0].kind == "dir" and not urls else "file"
        created_by = f"{' '.join(shell)} #(nop) {ins.keyword} {kind}:{checksum.partition(':')[2]} in {dest_path} "
        return ("copy", details), text, created_by, checksum, files, label

    def _resolve_chown(self, ins, state, spec: str) -> tuple[int, int]:
        """``--chown=user:group`` with names looked up in the image's /etc/passwd and /etc/group."""
        from ..runtime.user import RootView, UserNotFound, resolve_user

        user, _, group = spec.partition(":")
        if user.isdigit() and (not group or group.isdigit()):
            uid = int(user)
            return uid, int(group) if group else uid
        if self._dry:
            return 0, 0  # names are looked up when the step runs: a RUN may create them
        lowers = [str(p) for p in reversed(self.engine.snapshots.ensure(state.image))]
        view = RootView(lowers)
        try:
            resolved = resolve_user(view, spec if group else user)
        except (UserNotFound, EngineError) as e:
            raise self._fail(ins, f"{ins.keyword} --chown={spec}: {e}") from None
        return resolved.uid, resolved.gid

    # -- doing a step -------------------------------------------------------------------

    def _execute(self, step: Step, ins, state: _State, config: dict, file_step, created_by: str,
                 author, key: CacheKey):
        from ..image.child import make_child

        kind = file_step[0] if file_step is not None else None
        upper = None
        try:
            if kind == "run":
                upper = self._run(step, ins, state, *file_step[1])
            elif kind is not None:
                upper = self._file_step(step, ins, state, kind, file_step[1])
            return make_child(self.engine, state.image, run_config=config,
                              entry={"created_by": created_by}, upper=upper, author=author,
                              meta={"build": key.record()}, family=False)
        finally:
            if kind == "run":
                self._remove_container()
            elif upper is not None:
                shutil.rmtree(os.path.dirname(upper), ignore_errors=True)

    def _remove_container(self) -> None:
        """Remove the intermediate container (docker's --rm default for builds)."""
        if self._containers:
            container = self._containers.pop()
            # The record on disk may say "running" (the launcher wrote it) while ours
            # is the one from create: reload it, so that removal kills the process.
            try:
                container.reload()
            except EngineError:
                pass
            container._remove_quietly()
            self._emit("removed", data=container.id)

    def _run(self, step: Step, ins, state: _State, argv: list[str], run_args: dict) -> str:
        """RUN: a container from the current image; its upper directory is the step's layer."""
        try:
            container = self.engine.containers.create(
                state.image, argv, entrypoint="", environment=[f"{k}={v}" for k, v in run_args.items()],
                network_mode=self.network_mode)
        except EngineError as e:
            raise self._fail(ins, f"RUN: {e}") from None
        self._containers.append(container)
        self._emit("running", step, container.id)
        chunks = []

        def output(stream, data):
            chunks.append(data)
            step.output += data
            self._emit("output", step, data)

        try:
            status = container.run(output=output)
        except SpawnError as e:
            raise BuildError(f"{self.filename}:{ins.start_line}: RUN {' '.join(argv)}: {e}", step) from None
        if status != 0:
            self._remove_container()
            raise BuildError(f"{self.filename}:{ins.start_line}: the command '{' '.join(argv)}' "
                             f"returned a non-zero code: {status}", step, status)
        return str(container.path / "upper")

    def _file_step(self, step: Step, ins, state: _State, kind: str, details) -> str:
        """COPY/ADD/WORKDIR: mount the image, change it in a chroot, return the upper dir."""
        from . import rootfs

        work = os.path.join(self.scratch_dir, f"step-{len(self.steps)}")
        for d in ("upper", "work", "merged"):
            os.makedirs(os.path.join(work, d), mode=0o755)
        overlay = self._overlay(state.image, work)
        steps = []
        try:
            if kind == "workdir":
                steps.append(rootfs.MakeDirs(details))
            elif kind == "copy":
                steps += self._copy_steps(ins, work, details)
            elif kind == "copy-from":
                archive, found = details["archive"], details["found"]  # packed when planned
                single = len(found) == 1 and found[0][1] != "dir" and len(details["srcs"]) == 1 \
                    and not any(c in details["srcs"][0] for c in "*?[")
                dest = details["dest"]
                if details["uid"] is not None:  # directories the copy creates belong to --chown too
                    into = dest.endswith("/") or not single
                    steps.append(rootfs.MakeDirs(dest if into else posixpath.dirname(dest),
                                                 details["uid"], details["gid"]))
                steps.append(rootfs.Unpack(archive, dest, single_file=single))
            rootfs.apply(overlay, steps)
        except (rootfs.FileStepError, OSError) as e:
            raise BuildError(f"{self.filename}:{ins.start_line}: {ins.keyword} failed: {e}", step) from None
        return os.path.join(work, "upper")

    def _overlay(self, image, work: str):
        from ..snapshot import Overlay

        lowers = [str(p) for p in reversed(self.engine.snapshots.ensure(image))]
        lowers.append(str(self.engine.snapshots.init_layer()))  # at least one lower, even for scratch
        return Overlay(tuple(lowers), os.path.join(work, "upper"), os.path.join(work, "work"),
                       os.path.join(work, "merged"))

    def _copy_steps(self, ins, work: str, details) -> list:
        """The tar archives a COPY/ADD unpacks, packed now from the context (and URLs)."""
        from . import rootfs

        steps, dest = [], details["dest"]
        uid = details["uid"] if details["uid"] is not None else 0
        gid = details["gid"] if details["gid"] is not None else 0
        if details["uid"] is not None:  # directories the copy creates belong to --chown too
            into = dest.endswith("/") or details["many"] or any(s.kind == "dir" for s in details["sources"])
            steps.append(rootfs.MakeDirs(dest if into else posixpath.dirname(dest), uid, gid))
        plain = []
        for source in details["sources"]:
            if ins.keyword == "ADD" and source.kind == "file":
                with self.context.open_file(source) as f:
                    kind = looks_like_archive(f.read(512))
                if kind is not None:
                    archive = os.path.join(work, f"add-{len(steps)}.tar")
                    with self.context.open_file(source) as f, open(archive, "wb") as out:
                        shutil.copyfileobj(f, out)
                    # --chown does not apply to what an archive holds: its owners stay, as in
                    # docker (classic and BuildKit alike)
                    steps.append(rootfs.Unpack(archive, dest if dest.endswith("/") else dest + "/"))
                    continue
            plain.append(source)
        if plain:
            archive = os.path.join(work, "copy.tar")
            with open(archive, "wb") as out:
                self.context.pack(plain, out, uid=uid, gid=gid, mode=details["mode"])
            single = not details["many"] and len(plain) == 1 and plain[0].kind != "dir"
            steps.append(rootfs.Unpack(archive, dest, single_file=single))
        for i, url in enumerate(details["urls"]):
            archive = os.path.join(work, f"url-{i}.tar")
            self._fetch(ins, url, archive, uid, gid, details["mode"])
            steps.append(rootfs.Unpack(archive, dest, single_file=not details["many"]))
        return steps

    def _fetch(self, ins, url: str, archive: str, uid: int, gid: int, mode: int | None) -> None:
        """ADD <url>: download with requests; the file keeps the URL's base name and
        mode 0600 (the reference), and the Last-Modified time when the server sends one."""
        import tarfile

        body, name, mtime, _ = self._download(ins, url)
        with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
            info = tar.gettarinfo(body, arcname=name)
            info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
            info.mode = 0o600 if mode is None else mode
            info.mtime = int(mtime)
            with open(body, "rb") as f:
                tar.addfile(info, f)

    def _download(self, ins, url: str) -> tuple[str, str, float, str]:
        """Fetch ``url`` once per build into the scratch directory (when the step is
        planned, for its cache key); return (path, file name, mtime, sha256 of the body)."""
        import email.utils
        import hashlib

        import requests

        downloads = self._downloads
        if url in downloads:
            return downloads[url]
        body = os.path.join(self.scratch_dir, f"download-{len(downloads)}")
        digest = hashlib.sha256()
        try:
            response = requests.get(url, timeout=60, stream=True)
            response.raise_for_status()
            with open(body, "wb") as f:
                for chunk in response.iter_content(1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
        except requests.RequestException as e:
            raise BuildError(f"{self.filename}:{ins.start_line}: ADD failed: {url}: {e}") from None
        name = posixpath.basename(requests.utils.urlparse(url).path) or "index.html"
        mtime = time.time()
        if response.headers.get("Last-Modified"):
            try:
                mtime = email.utils.parsedate_to_datetime(response.headers["Last-Modified"]).timestamp()
            except (TypeError, ValueError):
                pass
        downloads[url] = (body, name, mtime, "sha256:" + digest.hexdigest())
        return downloads[url]

    # -- --label --------------------------------------------------------------------------

    def _label_step(self, stage: _Stage, image, number: int, total: int):
        """``--label k=v``: one more LABEL step on the final image, as the classic builder adds."""
        text = "LABEL " + " ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        ins = D.parse("FROM scratch\n" + text, "--label")[1]
        state = _State(image, copy.deepcopy(image.run_config))
        state.changed = any(s.cached is False for s in self.steps)
        self._meta_args = getattr(self, "_meta_args", {})
        self._dispatch(stage, state, [], ins, number, total)
        return state.image


def _tar_digests(path: str) -> dict[str, str]:
    """{name: sha256 of type, mode, owner, link target and content} for each
    member of a tar we packed (mtimes left out, as in the context's digests)."""
    import hashlib
    import tarfile

    out = {}
    with tarfile.open(path) as tar:
        for member in tar:
            h = hashlib.sha256(f"{member.type!r}\0{member.mode:o}\0{member.uid}\0{member.gid}\0"
                               f"{member.linkname}\0{member.devmajor}:{member.devminor}\0".encode())
            if member.isfile():
                f = tar.extractfile(member)
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[member.name] = h.hexdigest()
    return out


def _set_env(env: list[str], key: str, value: str) -> list[str]:
    out = [e for e in env]
    for i, item in enumerate(out):
        if item.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    out.append(f"{key}={value}")
    return out


def _parse_ports(word: str, fail) -> list[str]:
    """``80``, ``80/udp``, ``8000-8002/tcp`` -> ["80/tcp"...] (docker's nat.ParsePortSpec)."""
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise fail(f"EXPOSE: invalid proto: {proto}")
    start, _, end = port.partition("-")
    try:
        first, last = int(start), int(end or start)
        if not (0 < first <= 65535 and 0 < last <= 65535) or last < first:
            raise ValueError
    except ValueError:
        raise fail(f"EXPOSE: invalid port: {word}") from None
    return [f"{p}/{proto}" for p in range(first, last + 1)]


def _parse_trigger(text: str, base_name: str, line: int) -> D.Instruction:
    """One ONBUILD trigger, parsed alone: no FROM precedes it (docker parses each one so).
    It gets the line of the FROM that runs it, so that its errors point there."""
    return D._instruction(text, "\\", f"ONBUILD trigger of {base_name}", line, line)


def _go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()``: 0s, 1.5s, 5m0s, 1h0m0s, 100ms, 10µs."""
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return f"{ns / size:g}{unit}"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = f"{rest / 1_000_000_000:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


def _go_healthcheck(hc: dict) -> str:
    """The history text docker's classic builder writes for HEALTHCHECK: Go's
    ``%q`` of its HealthConfig (``&{["CMD-SHELL" "..."] "30s" "3s" "0s" '\\x03'}``)."""
    test = " ".join(json.dumps(t, ensure_ascii=False) for t in hc["Test"])
    durations = [hc.get("Interval", 0), hc.get("Timeout", 0), hc.get("StartPeriod", 0)]
    if hc.get("StartInterval"):
        durations.append(hc["StartInterval"])
    shown = " ".join(f'"{_go_duration(d)}"' for d in durations)
    return f"&{{[{test}] {shown} '\\x{hc.get('Retries', 0):02x}'}}"


def _healthcheck(hc: D.Healthcheck) -> dict:
    """The parser's Healthcheck in the image config's shape (zero durations left out)."""
    out = {"Test": list(hc.test)}
    for name, value in (("Interval", hc.interval), ("Timeout", hc.timeout),
                        ("StartPeriod", hc.start_period), ("StartInterval", hc.start_interval),
                        ("Retries", hc.retries)):
        if value:
            out[name] = value
    return out
