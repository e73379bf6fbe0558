module trio-sse-bench-peer

go 1.19
