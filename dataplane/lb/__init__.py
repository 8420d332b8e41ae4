"""Load balancing: the control plane of an L4 load balancer (Maglev rings)."""
