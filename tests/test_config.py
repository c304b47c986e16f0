"""Loading TOML and Cyclone 2.x INI configuration, command-line overrides, building plugins."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from cyclone_core import ConfigError, Task, UsageError, hookimpl
from cyclone_core.builtins.generators import BenchmarkGenerator
from cyclone_core.builtins.sinks import JsonlSink, SqliteSink
from cyclone_core.config import (
    Config,
    ControllerSettings,
    GeneratorSettings,
    LogSettings,
    MasterSettings,
    apply_overrides,
    build_generator,
    build_sinks,
    controller_task_types,
    load_config,
)
from cyclone_core.plugins import PluginInfo


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path, so that files are named as a user would name them (``master.toml``)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(name: str, text: str) -> Path:
    path = Path(name)
    path.write_text(textwrap.dedent(text))
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- TOML ----------------------------------------------------------------------------------


def test_a_complete_toml_file_loads_into_the_settings_classes(in_tmp: Path) -> None:
    path = write(
        "cyclone.toml",
        """
        [master]
        bind = "tcp://*:6000"
        window = 500
        controller_timeout = 30

        [controller]
        master = "tcp://head01:6000"
        workers = 4

        [log]
        file = "cyclone.log"
        level = "debug"

        [generator]
        name = "benchmark"
        options = { count = 10, task = "sleep", args = { seconds = 0.1 } }

        [sinks.jsonl]
        path = "out.jsonl"
        """,
    )
    assert load_config(path) == Config(
        master=MasterSettings(bind="tcp://*:6000", window=500, controller_timeout=30.0),
        controller=ControllerSettings(master="tcp://head01:6000", workers=4),
        log=LogSettings(file="cyclone.log", level="debug"),
        generator=GeneratorSettings(name="benchmark", options={"count": 10, "task": "sleep", "args": {"seconds": 0.1}}),
        sinks={"jsonl": {"path": "out.jsonl"}},
    )


def test_an_empty_file_gives_the_defaults(in_tmp: Path) -> None:
    assert load_config(write("empty.toml", "")) == Config()


def test_a_bad_value_names_file_key_and_problem(in_tmp: Path) -> None:
    path = write("master.toml", '[master]\nwindow = "ten"\n')
    assert config_error(path) == "master.toml: master.window: expected a whole number, got 'ten'"


def test_a_value_outside_its_range_names_the_key(in_tmp: Path) -> None:
    path = write("master.toml", "[master]\nwindow = 0\n")
    assert config_error(path) == "master.toml: master.window: must be > 0, got 0"


def test_an_unknown_key_is_an_error_listing_the_known_ones(in_tmp: Path) -> None:
    message = config_error(write("master.toml", "[master]\nwindw = 10\n"))
    known = "bind, journal, journal_min_free_mb, pid_file,"
    assert message.startswith(f"master.toml: master.windw: unknown key (known: {known}")


def test_an_unknown_table_is_an_error(in_tmp: Path) -> None:
    message = config_error(write("master.toml", "[mastr]\nwindow = 10\n"))
    assert message == "master.toml: mastr: unknown key (known: master, controller, log, generator, sinks)"


def test_a_table_given_as_a_value_is_an_error(in_tmp: Path) -> None:
    assert config_error(write("master.toml", "master = 3\n")) == "master.toml: master: expected a table, got 3"


def test_bad_sink_tables_are_reported(in_tmp: Path) -> None:
    assert (
        config_error(write("master.toml", "[sinks]\nsqlite = 3\n"))
        == "master.toml: sinks['sqlite']: expected a mapping"
    )


def test_invalid_toml_is_one_line(in_tmp: Path) -> None:
    message = config_error(write("master.toml", "[master]\nwindow = = 3\n"))
    assert message.startswith("master.toml: invalid TOML: ")
    assert "line 2" in message


def test_a_missing_file_is_reported(in_tmp: Path) -> None:
    assert config_error(Path("nope.toml")) == "nope.toml: cannot read: No such file or directory"


def test_an_unknown_file_type_is_reported(in_tmp: Path) -> None:
    message = config_error(write("master.yaml", "master: {}\n"))
    assert message == "master.yaml: unknown file type '.yaml': use .toml, or .conf/.ini/.cfg for a Cyclone 2.x file"


# -- what a controller runs, and its local settings ---------------------------------------


@attrs.frozen(kw_only=True)
class ProbeLocal:
    program: str = "probe"
    sudo: bool = False


@attrs.define(kw_only=True)
class ProbeTask(Task):
    name: ClassVar[str] = "test-probe"
    local_section: ClassVar[str] = "probes"
    local_settings: ClassVar[type[Any] | None] = ProbeLocal


class ProbePlugin:
    @hookimpl
    def cyclone_task_types(self) -> list[type[Task]]:
        return [ProbeTask]


@pytest.fixture
def probe_plugin(cyclone_register_plugin: Callable[..., PluginInfo]) -> None:
    assert cyclone_register_plugin(ProbePlugin(), name="test-probe-plugin").status == "ok"


@pytest.mark.usefixtures("probe_plugin")
def test_task_types_and_local_tables_load_into_the_controller_settings(in_tmp: Path) -> None:
    path = write(
        "controller.toml",
        """
        [controller]
        task_types = ["test-probe", "noop"]

        [controller.local.probes]
        program = "/usr/sbin/probe"
        sudo = true
        """,
    )
    settings = load_config(path).controller
    assert settings.task_types == ["test-probe", "noop"]
    assert settings.local == {"probes": {"program": "/usr/sbin/probe", "sudo": True}}
    assert controller_task_types(settings) == ["noop", "test-probe"]


@pytest.mark.usefixtures("probe_plugin")
def test_no_task_types_means_every_installed_one() -> None:
    assert {"noop", "sleep", "test-probe"} <= set(controller_task_types(ControllerSettings()))


@pytest.mark.usefixtures("probe_plugin")
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[controller]\ntask_types = ["nop"]\n',
            "controller.toml: controller.task_types: unknown task type 'nop' (installed: command, crash, fail,",
        ),
        (
            '[controller.local.probes]\nsudo = "maybe"\n',
            "controller.toml: controller.local.probes.sudo: expected true or false, got 'maybe'",
        ),
        (
            '[controller.local.probes]\nprogramme = "/bin/sh"\n',
            "controller.toml: controller.local.probes.programme: unknown key (known: program, sudo)",
        ),
        (
            "[controller.local.probez]\nprogram = 1\n",
            "controller.toml: controller.local.probez: no installed task type reads this table "
            "(tables read: command, crash,",
        ),
    ],
)
def test_bad_task_types_and_local_settings_are_one_line_naming_file_and_key(
    in_tmp: Path, text: str, message: str
) -> None:
    assert config_error(write("controller.toml", text)).startswith(message)


@pytest.mark.usefixtures("probe_plugin")
def test_a_controller_restricted_to_other_types_still_gets_its_tables_checked_when_it_runs_them() -> None:
    settings = ControllerSettings(task_types=["noop"], local={"probes": {"sudo": "maybe"}})
    assert controller_task_types(settings) == ["noop"]  # the table is not for a type it runs
    with pytest.raises(ConfigError, match=r"^controller.local.probes.sudo: expected true or false"):
        controller_task_types(attrs.evolve(settings, task_types=[]))


# -- Cyclone 2.x INI files -----------------------------------------------------------------

MASTER_INI = """
    [control]
    pid_file = /var/run/cyclone/master.pid
    controller_timeout = 20
    controller_wait_duration = 1
    task_resend_timeout = 28800

    [comm]
    target = *
    port = 5678
    poll_timeout = 1

    [log]
    filename =

    [task_generator]
    module = task_generator.benchmark_task_generator
    class = BenchmarkTaskGenerator
    config_file = benchmark.conf
"""

BENCHMARK_INI = """
    [control]
    num_tasks = 500
    poll_time_ms = 500
"""

CONTROLLER_INI = """
    [control]
    pid_file = /var/run/cyclone/controller.pid
    request_retry_wait_duration = 5
    max_num_request_retries = 3

    [comm]
    target = 10.20.30.40
    port = 5678
    poll_timeout = 2

    [log]
    filename = /var/log/cyclone/controller.log

    [processing]
    worker_count = 8
"""


def test_a_2x_master_file_maps_onto_the_master_settings(in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    write("benchmark.conf", BENCHMARK_INI)
    with caplog.at_level(logging.INFO, logger="cyclone.config"):
        config = load_config(write("master.conf", MASTER_INI))
    assert config == Config(
        master=MasterSettings(
            bind="tcp://*:5678",
            pid_file="/var/run/cyclone/master.pid",
            controller_timeout=20.0,
            task_timeout=28800.0,
        ),
        log=LogSettings(file=""),
        generator=GeneratorSettings(name="benchmark", options={"count": 500}),
    )
    ignored = {record.getMessage() for record in caplog.records}
    assert (
        "master.conf: control.controller_wait_duration is ignored: it has no meaning in this version of Cyclone"
        in ignored
    )
    assert "master.conf: comm.poll_timeout is ignored: it has no meaning in this version of Cyclone" in ignored
    assert isinstance(build_generator(config), BenchmarkGenerator)


def test_a_2x_controller_file_maps_onto_the_controller_settings(in_tmp: Path) -> None:
    config = load_config(write("controller.conf", CONTROLLER_INI))
    assert config == Config(
        controller=ControllerSettings(
            master="tcp://10.20.30.40:5678",
            pid_file="/var/run/cyclone/controller.pid",
            reconnect_interval=5.0,
            max_reconnects=3,
            workers=8,
        ),
        log=LogSettings(file="/var/log/cyclone/controller.log"),
    )


@pytest.mark.parametrize(
    ("port", "ok"), [("1023", False), ("1024", True), ("65535", True), ("65536", False), ("http", False)]
)
def test_ports_are_checked_like_2x(in_tmp: Path, port: str, ok: bool) -> None:
    path = write("master.conf", f"[comm]\ntarget = *\nport = {port}\n")
    if ok:
        assert load_config(path).master.bind == f"tcp://*:{port}"
    else:
        assert config_error(path) == f"master.conf: comm.port: expected a port from 1024 to 65535, got '{port}'"


def test_a_controller_needs_a_master_address(in_tmp: Path) -> None:
    path = write("controller.conf", "[comm]\ntarget = *\n[processing]\nworker_count = 2\n")
    assert config_error(path) == (
        "controller.conf: comm.target: a controller needs the master's host name or address, not '*'"
    )


def test_a_bad_2x_value_names_the_2x_key(in_tmp: Path) -> None:
    path = write("master.conf", "[control]\ncontroller_timeout = soon\n")
    assert config_error(path) == "master.conf: control.controller_timeout: expected a number, got 'soon'"
    path = write("master.conf", "[control]\ncontroller_timeout = 0\n")
    assert config_error(path) == "master.conf: control.controller_timeout: must be > 0, got 0.0"


def test_unknown_2x_keys_and_sections_are_errors(in_tmp: Path) -> None:
    assert config_error(write("master.conf", "[control]\nrequest_retry_wait_duration = 5\n")) == (
        "master.conf: control.request_retry_wait_duration: unknown key in a Cyclone 2.x master file"
    )
    assert config_error(write("master.conf", "[db]\nhost = x\n")) == (
        "master.conf: [db]: not a section of a Cyclone 2.x master file (known: comm, control, log, task_generator)"
    )
    # [processing] makes it a controller file, which has no generator.
    assert config_error(write("controller.conf", "[processing]\nworker_count = 2\n[task_generator]\nname = x\n")) == (
        "controller.conf: [task_generator]: not a section of a Cyclone 2.x controller file"
        " (known: comm, control, log, processing)"
    )


def test_invalid_ini_is_one_line(in_tmp: Path) -> None:
    message = config_error(write("master.conf", "no section header\n"))
    assert message.startswith("master.conf: invalid INI file: File contains no section headers.")


def test_the_generator_module_is_never_imported(in_tmp: Path) -> None:
    path = write("master.conf", "[task_generator]\nmodule = no.such.module\nclass = BenchmarkTaskGenerator\n")
    assert load_config(path).generator == GeneratorSettings(name="benchmark", options={})


def test_a_generator_can_be_named_instead_of_its_2x_class(in_tmp: Path) -> None:
    write("benchmark.conf", BENCHMARK_INI)
    path = write("master.conf", "[task_generator]\nname = benchmark\nconfig_file = benchmark.conf\n")
    assert load_config(path).generator == GeneratorSettings(name="benchmark", options={"count": 500})


def test_an_unknown_2x_generator_class_lists_the_known_ones(in_tmp: Path) -> None:
    message = config_error(write("master.conf", "[task_generator]\nclass = LustreFooTaskGenerator\n"))
    assert message.startswith(
        "master.conf: task_generator.class: no installed generator replaces Cyclone 2.x class 'LustreFooTaskGenerator'"
        " (known: "
    )
    assert "BenchmarkTaskGenerator (benchmark)" in message


def test_an_unknown_generator_name_is_reported(in_tmp: Path) -> None:
    message = config_error(write("master.conf", "[task_generator]\nname = nope\n"))
    assert message.startswith("master.conf: task_generator.name: unknown generator 'nope' (known: benchmark, ")


def test_errors_in_the_2x_generator_file_name_that_file(in_tmp: Path) -> None:
    write("benchmark.conf", "[control]\nnum_tasks = many\n")
    path = write("master.conf", "[task_generator]\nclass = BenchmarkTaskGenerator\nconfig_file = benchmark.conf\n")
    assert config_error(path) == "benchmark.conf: control.num_tasks: expected a whole number, got 'many'"
    write("benchmark.conf", "[control]\nnum_task = 5\n")
    assert config_error(path) == "benchmark.conf: control.num_task: unknown key (known: num_tasks, poll_time_ms)"


def test_a_generator_without_2x_options_refuses_a_2x_file(in_tmp: Path) -> None:
    write("tasks.conf", "[control]\nx = 1\n")
    path = write("master.conf", "[task_generator]\nname = tasks-file\nconfig_file = tasks.conf\n")
    assert config_error(path) == "tasks.conf: generator 'tasks-file' cannot read a Cyclone 2.x config file"


# -- command-line overrides ------------------------------------------------------------------


def test_overrides_set_generator_and_sink_options() -> None:
    # A generator that is not installed here: its options are whatever the command line says.
    config = Config(generator=GeneratorSettings(name="elsewhere"), sinks={"sqlite": {"path": "a.sqlite"}})
    returned = apply_overrides(
        config,
        generator_options=["count=10", "task=sleep", "args.seconds=0.5", 'extra={"a": [1, 2]}', "path=/scratch"],
        sink_options=["sqlite.path=b.sqlite", "jsonl.path=out.jsonl", "jsonl.batch_size=50"],
    )
    assert returned is config
    assert config.generator.options == {
        "count": 10,
        "task": "sleep",
        "args": {"seconds": 0.5},
        "extra": {"a": [1, 2]},
        "path": "/scratch",
    }
    assert config.sinks == {"sqlite": {"path": "b.sqlite"}, "jsonl": {"path": "out.jsonl", "batch_size": 50}}


@pytest.mark.parametrize(
    ("generator_options", "sink_options", "message"),
    [
        (["count"], [], "generator option 'count': expected KEY=VALUE"),
        (["=5"], [], "generator option '=5': expected KEY=VALUE"),
        (["args.=5"], [], "generator option 'args.=5': empty key"),
        (["task=noop", "task.x=1"], [], "generator option 'task.x=1': task is not a table"),
        ([], ["path=x"], "sink option 'path=x': expected SINK.KEY=VALUE"),
        ([], ["sqlite.=x"], "sink option 'sqlite.=x': expected SINK.KEY=VALUE"),
        ([], ["sqlite"], "sink option 'sqlite': expected SINK.KEY=VALUE"),
    ],
)
def test_malformed_overrides_name_the_item(generator_options: list[str], sink_options: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        apply_overrides(Config(), generator_options, sink_options)
    assert str(caught.value) == message


# -- building the generator and the sinks ----------------------------------------------------


def test_the_default_sink_is_sqlite() -> None:
    assert build_sinks(Config()) == [SqliteSink()]


def test_sinks_are_built_from_their_options() -> None:
    config = Config(sinks={"jsonl": {"path": "x.jsonl", "batch_size": "10"}, "sqlite": {}})
    assert build_sinks(config) == [JsonlSink(path="x.jsonl", batch_size=10), SqliteSink()]


def test_bad_sink_options_name_the_sink() -> None:
    with pytest.raises(ConfigError, match=r"^sink 'jsonl': extra fields found \(pth\)$"):
        build_sinks(Config(sinks={"jsonl": {"pth": "x"}}))
    with pytest.raises(ConfigError, match=r"^unknown sink 'nope' \(known: .*jsonl.*sqlite"):
        build_sinks(Config(sinks={"nope": {}}))


def test_the_generator_is_built_from_its_options() -> None:
    config = apply_overrides(Config(), ["count=3", "task=sleep", "args.seconds=0"])
    generator = build_generator(config)
    assert isinstance(generator, BenchmarkGenerator)
    assert [spec.key for spec in generator.tasks()] == ["0", "1", "2"]


def test_bad_generator_options_name_the_generator() -> None:
    with pytest.raises(ConfigError) as caught:
        build_generator(apply_overrides(Config(), ["count=many"]))
    assert str(caught.value) == "generator 'benchmark': count: expected a whole number, got 'many'"
    with pytest.raises(ConfigError, match=r"^unknown generator 'nope' \(known: benchmark, "):
        build_generator(Config(generator=GeneratorSettings(name="nope")))


def test_the_command_type_is_announced_only_once_the_controller_allows_programs() -> None:
    assert "command" not in controller_task_types(ControllerSettings())
    allowed = ControllerSettings(local={"command": {"executables": ["/bin/true"]}})
    assert "command" in controller_task_types(allowed)
    with pytest.raises(ConfigError, match=r"controller\.task_types: task type 'command' is off on this controller"):
        controller_task_types(ControllerSettings(task_types=["command"]))


def test_an_insecure_controller_does_not_run_commands() -> None:
    local = {"command": {"executables": ["/bin/true"]}}
    assert "command" not in controller_task_types(ControllerSettings(insecure=True, local=local))
    with pytest.raises(ConfigError, match="task type 'command' needs keys"):
        controller_task_types(ControllerSettings(insecure=True, local=local, task_types=["command"]))
