"""The Grafana dashboard, built with Grafana's own `grafana-foundation-sdk` builders.

Every query reads a metric name from `series` (and so from the components' `metrics`
modules). Variables: the data source, `namespace` and `webhook` (a GeminiWebhook's name);
receiver panels filter on both, operator panels on the per-webhook labels where the metric
has them (`namespace`, `name`).
"""

from __future__ import annotations

import itertools

from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableModel,
    VariableRefresh,
    VariableSort,
)

from gemini_webhooks.observability import series as s

UID = "gemini-webhooks"
TITLE = "Gemini webhooks"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

RECEIVER = f'job="{s.RECEIVER_JOB}", namespace=~"$namespace", webhook=~"$webhook"'
OPERATOR = f'job="{s.OPERATOR_JOB}"'
PER_WEBHOOK = f'{OPERATOR}, namespace=~"$namespace", name=~"$webhook"'
RATE = "[$__rate_interval]"


def _query(expr: str, legend: str, ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _timeseries(title: str, description: str, unit: str, *queries: Dataquery) -> Timeseries:
    panel = (
        Timeseries()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _quantiles(bucket: str, selector: str) -> list[Dataquery]:
    return [
        _query(
            f"histogram_quantile({q}, sum by (le) (rate({bucket}{{{selector}}}{RATE})))",
            f"p{round(q * 100)}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.99, "B"))
    ]


def _variables() -> list[Builder[VariableModel]]:
    namespace = (
        QueryVariable("namespace")
        .label("Namespace")
        .datasource(DATASOURCE)
        .query(f"label_values({s.SECRET_AGE}{{{OPERATOR}}}, namespace)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    webhook = (
        QueryVariable("webhook")
        .label("GeminiWebhook")
        .datasource(DATASOURCE)
        .query(f'label_values({s.SECRET_AGE}{{{OPERATOR}, namespace=~"$namespace"}}, name)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        namespace,
        webhook,
    ]


def build() -> Dashboard:
    deliveries: list[Timeseries | Stat] = [
        _timeseries(
            "Deliveries per second by outcome",
            "Every delivery the receivers answered: accepted, duplicate, ping, rejected, failed.",
            "reqps",
            _query(f"sum by (outcome) (rate({s.DELIVERIES}{{{RECEIVER}}}{RATE}))", "{{outcome}}"),
        ),
        _timeseries(
            "Rejections by reason",
            "Deliveries refused with a 4xx (or 503 before secrets load), by reason code.",
            "reqps",
            _query(
                f"sum by (reason) (rate({s.DELIVERIES}{{{RECEIVER}, "
                f'outcome="{s.OUTCOME_REJECTED}"}}{RATE}))',
                "{{reason}}",
            ),
        ),
        _timeseries(
            "Acknowledgement latency",
            "Time from request start to the answer sent to Gemini (p50, p99).",
            "s",
            *_quantiles(s.ACK_BUCKET, RECEIVER),
        ),
        _timeseries(
            "End-to-end latency",
            "Time from receipt to delivery at every target (p50, p99).",
            "s",
            *_quantiles(s.END_TO_END_BUCKET, RECEIVER),
        ),
        _timeseries(
            "Duplicates",
            "Deliveries answered 2xx without forwarding because their webhook-id was seen.",
            "reqps",
            _query(f"sum by (source) (rate({s.DUPLICATES}{{{RECEIVER}}}{RATE}))", "{{source}}"),
        ),
    ]
    forwarding: list[Timeseries | Stat] = [
        _timeseries(
            "Forwards by target and outcome",
            "Forward attempts to in-cluster targets.",
            "reqps",
            _query(
                f"sum by (target, outcome) (rate({s.FORWARDS}{{{RECEIVER}}}{RATE}))",
                "{{target}} {{outcome}}",
            ),
        ),
        _timeseries(
            "Queue depth and lag",
            "Redis mode: entries not yet acknowledged, and the age of the oldest one.",
            "short",
            _query(
                f"sum by (namespace, webhook) ({s.QUEUE_DEPTH}{{{RECEIVER}}})",
                "depth {{namespace}}/{{webhook}}",
                "A",
            ),
            _query(
                f"max by (namespace, webhook) ({s.QUEUE_LAG}{{{RECEIVER}}})",
                "lag (s) {{namespace}}/{{webhook}}",
                "B",
            ),
        ),
        _timeseries(
            "Dead letters",
            "Events given up on, by reason; and (Redis mode) the dead-letter stream's length.",
            "short",
            _query(
                f"sum by (reason) (increase({s.DEAD_LETTERS}{{{RECEIVER}}}{RATE}))",
                "new: {{reason}}",
                "A",
            ),
            _query(
                f"sum by (namespace, webhook) ({s.DEAD_LETTER_DEPTH}{{{RECEIVER}}})",
                "stored {{namespace}}/{{webhook}}",
                "B",
            ),
        ),
    ]
    lifecycle: list[Timeseries | Stat] = [
        Stat()
        .title("Webhooks by remote state")
        .description("GeminiWebhook resources by the state Gemini reports for their webhook.")
        .datasource(DATASOURCE)
        .span(8)
        .height(8)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(_query(f"sum by (state) ({s.WEBHOOKS}{{{OPERATOR}}})", "{{state}}")),
        _timeseries(
            "Signing-secret age against the rotation schedule",
            "Age of each webhook's current secret, and the time left until its policy rotates "
            "it (negative: overdue).",
            "s",
            _query(f"{s.SECRET_AGE}{{{PER_WEBHOOK}}}", "age {{namespace}}/{{name}}", "A"),
            _query(
                f"{s.NEXT_ROTATION}{{{PER_WEBHOOK}}} - time()",
                "until rotation {{namespace}}/{{name}}",
                "B",
            ),
        ).span(16),
        _timeseries(
            "Reconcile errors",
            "Reconciliations that ended in an error or a retry, by handler and reason.",
            "ops",
            _query(
                f"sum by (handler, result, reason) (rate({s.RECONCILES}{{{OPERATOR}, "
                f'result!="success"}}{RATE}))',
                "{{handler}} {{result}}: {{reason}}",
            ),
        ),
        _timeseries(
            "Ready and Synced",
            "Each GeminiWebhook's Ready and Synced conditions: 1 True, 0 False.",
            "bool",
            _query(f"{s.RESOURCE_CONDITION}{{{PER_WEBHOOK}}}", "{{type}} {{namespace}}/{{name}}"),
        ),
        _timeseries(
            "WebhookService calls by status code",
            "Calls the operator made to the Gemini WebhookService, by method and HTTP status.",
            "reqps",
            _query(
                f"sum by (method, code) (rate({s.API_REQUESTS}{{{OPERATOR}}}{RATE}))",
                "{{method}} {{code}}",
            ),
        ),
        _timeseries(
            "Delivery verified (end-to-end health)",
            "1 when the operator's last health ping reached the receiver and verified.",
            "bool",
            _query(f"{s.DELIVERY_VERIFIED}{{{PER_WEBHOOK}}}", "{{namespace}}/{{name}}"),
        ),
        _timeseries(
            "Rotations and heals",
            "Signing-secret rotations and heals performed by the operator, and heals it "
            "withheld (the remote cannot tell, or the heal rate limit), by reason.",
            "short",
            _query(
                f"sum by (reason) (increase({s.ROTATIONS}{{{OPERATOR}}}{RATE}))",
                "rotation: {{reason}}",
                "A",
            ),
            _query(
                f"sum by (reason) (increase({s.HEALS}{{{OPERATOR}}}{RATE}))",
                "heal: {{reason}}",
                "B",
            ),
            _query(
                f"sum by (reason) (increase({s.HEAL_HOLDS}{{{OPERATOR}}}{RATE}))",
                "withheld heal: {{reason}}",
                "C",
            ),
        ),
    ]

    dashboard = (
        Dashboard(TITLE)
        .uid(UID)
        .description("Deliveries, forwarding, webhook lifecycle and the operator's health.")
        .tags(["gemini", "webhooks", "kubernetes"])
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .variables(_variables())
    )
    # The SDK leaves panel ids unset (rows get 0); Grafana wants them unique per dashboard.
    ids = itertools.count(1)
    for title, panels in (
        ("Deliveries", deliveries),
        ("Forwarding", forwarding),
        ("Webhooks and operator", lifecycle),
    ):
        dashboard = dashboard.with_row(Row(title).id(next(ids)))
        for panel in panels:
            dashboard = dashboard.with_panel(panel.id(next(ids)))
    return dashboard


def render() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"
