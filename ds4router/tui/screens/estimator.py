"""The Estimator screen: a month of tokens priced on many models and on local hardware.

The table comes from ``pricing.estimator`` (computed in a worker thread): the
monthly cost on each model, USD per 1M output tokens of the mix, and the two
crossovers — the output tokens a month above which local hardware costs less,
amortised, and whether it does with the hardware owned anyway (electricity only).
Below it, the plot of monthly cost against output tokens a month for the local
lines and the chosen cloud models (``pricing.estimate_plot``'s curves, drawn by
textual-plotext: Plotext's terminal plots as a Textual widget).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Select, Static
from textual_plotext import PlotextPlot

from ds4router.tui.clock import steady_cursors
from ds4router.tui.format import count, money
from ds4router.tui.threads import ui_call

if TYPE_CHECKING:
    from pricing.estimator import Estimate

DEFAULT_OUTPUT = 5_000_000
DEFAULT_INPUT = 50_000_000
DEFAULT_CACHED = 0.5
DEFAULT_TOP = 20
DEFAULT_PROFILE = "m3-max-q2"


@dataclass(frozen=True)
class EstimateInputs:
    output_tokens: int
    input_tokens: int
    cached_share: float
    models: tuple[str, ...]  # empty: the catalog's featured models
    top: int
    profile: str


def parse_inputs(
    output: str, input_: str, cached: str, models: str, profile: str
) -> EstimateInputs:
    """The form's fields as numbers; ValueError with a field name on bad input."""

    def tokens(value: str, name: str) -> int:
        cleaned = value.replace(",", "").replace("_", "").strip().lower()
        scale = 1
        for suffix, factor in (("k", 1_000), ("m", 1_000_000), ("b", 1_000_000_000)):
            if cleaned.endswith(suffix):
                cleaned, scale = cleaned[:-1], factor
                break
        try:
            number = float(cleaned) * scale
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a number (e.g. 5M, 250k)") from None
        if number < 0:
            raise ValueError(f"{name} cannot be negative")
        return int(number)

    try:
        share = float(cached.strip() or "0")
    except ValueError:
        raise ValueError(f"cached share: {cached!r} is not a number between 0 and 1") from None
    if not 0 <= share <= 1:
        raise ValueError("cached share must be between 0 and 1")
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    top = DEFAULT_TOP
    if len(names) == 1 and names[0].lower().startswith("top"):
        try:
            top = int(names[0][3:].strip() or DEFAULT_TOP)
        except ValueError:
            raise ValueError("models: write 'top N' or a comma-separated list") from None
        names = ()
    output_tokens = tokens(output, "output tokens")
    if output_tokens <= 0:
        raise ValueError("output tokens a month must be more than 0")
    return EstimateInputs(output_tokens, tokens(input_, "input tokens"), share, names, top, profile)


def run_estimate(inputs: EstimateInputs, configs: Path, overrides: dict[str, Any]) -> Estimate:
    from pricing.catalog import PriceCatalog
    from pricing.estimator import estimate, usage_from_profile
    from pricing.profiles import load_profile

    catalog = PriceCatalog.load(configs / "prices", overrides)
    usage = usage_from_profile(inputs.output_tokens, inputs.input_tokens, inputs.cached_share)
    names = list(inputs.models) or catalog.featured(inputs.top)
    profile = load_profile(inputs.profile, configs / "local_profiles")
    return estimate(catalog, names, usage, profile)


class EstimatorScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Close", id="estimator.close"),
        Binding("ctrl+r", "run", "Estimate", id="estimator.run"),
    ]

    def __init__(self, *, configs: Path, overrides: dict[str, Any]) -> None:
        super().__init__()
        self.configs = configs
        self.overrides = overrides
        self.result: Estimate | None = None

    def compose(self) -> ComposeResult:
        from pricing.profiles import profile_names

        names = profile_names(self.configs / "local_profiles") or [DEFAULT_PROFILE]
        with Vertical(id="estimator-body"):
            yield Static(
                Text.assemble(
                    ("Estimator", "bold"),
                    " · a month of usage priced on cloud models and on local hardware"
                    "   (Enter or Ctrl+R estimates · Esc closes)",
                ),
                classes="screen-title",
            )
            with Horizontal(classes="form-row"):
                yield Label("output tok/month")
                yield Input(f"{DEFAULT_OUTPUT:,}", id="est-output")
                yield Label("input tok/month")
                yield Input(f"{DEFAULT_INPUT:,}", id="est-input")
                yield Label("cached share")
                yield Input(f"{DEFAULT_CACHED:g}", id="est-cached")
            with Horizontal(classes="form-row"):
                yield Label("models")
                yield Input(f"top {DEFAULT_TOP}", id="est-models")
                yield Label("local profile")
                yield Select(
                    [(n, n) for n in names],
                    value=DEFAULT_PROFILE if DEFAULT_PROFILE in names else names[0],
                    allow_blank=False,
                    id="est-profile",
                )
                yield Button("Estimate", id="est-run", variant="primary")
            yield Static("", id="est-summary")
            yield DataTable(id="est-table", cursor_type="row", zebra_stripes=True)
            yield PlotextPlot(id="est-plot")
        yield Footer()

    def on_mount(self) -> None:
        steady_cursors(self)  # the app's blink setting (off under test) holds here too
        table = self.query_one("#est-table", DataTable)
        table.add_column("model", width=34)
        table.add_column("kind")
        table.add_column("$/month")
        table.add_column("$/1M out")
        table.add_column("local wins above (out tok/month)")
        table.add_column("if owned")
        table.add_column("note")
        self.action_run()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "est-run":
            event.stop()
            self.action_run()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_run()

    def action_run(self) -> None:
        profile = self.query_one("#est-profile", Select).value
        try:
            inputs = parse_inputs(
                self.query_one("#est-output", Input).value,
                self.query_one("#est-input", Input).value,
                self.query_one("#est-cached", Input).value,
                self.query_one("#est-models", Input).value,
                str(profile) if isinstance(profile, str) else DEFAULT_PROFILE,
            )
        except ValueError as exc:
            self._summary(Text(str(exc), style="red"))
            return
        self._summary(Text("estimating…"))
        self.compute(inputs)

    @work(thread=True, exclusive=True, group="estimate")
    def compute(self, inputs: EstimateInputs) -> None:
        from pricing.errors import PricingError

        try:
            result = run_estimate(inputs, self.configs, self.overrides)
        except PricingError as exc:
            ui_call(self.app, self._summary, Text(str(exc), style="red"))
            return
        ui_call(self.app, self.show, result)

    def _summary(self, text: Text) -> None:
        self.query_one("#est-summary", Static).update(text)

    def show(self, result: Estimate) -> None:
        self.result = result
        usage = result.usage
        summary = Text()
        summary.append(
            f"{count(usage.output_tokens)} output · {count(usage.input_tokens)} input "
            f"({count(usage.cached_input_tokens)} cached) tokens a month"
        )
        if result.profile is not None and result.local is not None:
            local = result.local
            summary.append(
                f"\nlocal {result.profile.name}: {result.profile.tokens_per_second:g} tok/s, "
                f"hardware {money(local.hardware_usd)}/month + electricity "
                f"{money(local.electricity_usd)}/month = {money(local.monthly_usd)} amortised, "
                f"{money(local.electricity_usd)} if the hardware is owned anyway"
            )
            if not local.fits:
                summary.append("  (exceeds the machine's monthly capacity)", style="yellow")
        for name, suggestions in result.unknown:
            hint = f" (did you mean {', '.join(suggestions[:3])}?)" if suggestions else ""
            summary.append(f"\nno price for {name}{hint}", style="yellow")
        self._summary(summary)
        table = self.query_one("#est-table", DataTable)
        table.clear()
        for row in result.rows:
            style = "bold green" if row.kind == "local" else ""
            table.add_row(
                Text(row.model, style=style),
                row.kind,
                money(row.monthly_usd),
                money(row.usd_per_mtok),
                row.crossover,
                row.crossover_marginal,
                row.note,
            )
        self._plot(result)

    def _plot(self, result: Estimate) -> None:
        from pricing.estimate_plot import cost_curves

        widget = self.query_one("#est-plot", PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        curves = cost_curves(result)
        for curve in curves.curves:
            xs = [x / 1e6 for x, _ in curve.points]
            ys = [y for _, y in curve.points]
            plt.plot(xs, ys, label=curve.label, marker="braille")
        plt.title("$ a month against output tokens a month (millions)")
        plt.xlim(0, curves.x_max / 1e6)
        plt.ylim(0, curves.y_max)
        widget.refresh()
