"""A real Kubernetes control plane for tests and the local sandbox, built from the official
Go modules (`build`), started on loopback (`cluster`) with a node that runs our receiver
Pods as processes (`node`). `scripts/control-plane build|up|down` is its command line."""
