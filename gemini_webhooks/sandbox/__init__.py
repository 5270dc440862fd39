"""`gemini-webhooks sandbox`: the whole system on loopback, in one command.

- `supervisor`: child processes in their own process groups, readiness waits with visible
  progress, and a shutdown that leaves nothing behind.
- `consumer`: the sample consumer, standing in for an in-cluster Service.
- `kubelet`: plays the kubelet for the operator's receiver Deployments (and nothing else).
- `system`: starts everything in order; `demo`: the guided tour; `cli`: the subcommand.
"""
