// Validates prometheus-operator objects (JSON array on stdin) with the schemas of the
// @kubernetes-models/prometheus-operator package; prints one error message (or null) each.
import {
  PodMonitor,
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { PodMonitor, PrometheusRule, ServiceMonitor };
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((obj) => {
    const Kind = kinds[obj.kind];
    if (!Kind) return `unknown kind ${obj.kind}`;
    try {
      new Kind(obj).validate();
      return null;
    } catch (error) {
      return String(error.message || error);
    }
  });
  process.stdout.write(JSON.stringify(results));
});
