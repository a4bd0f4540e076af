# bpf/ — the CO-RE pressure monitor (libbpf skeletons).
