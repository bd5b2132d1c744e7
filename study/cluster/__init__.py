"""Ray: joining or starting a cluster, patches of private Ray APIs, the warm local cluster, stop signals, jobs."""
