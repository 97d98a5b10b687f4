"""Run anywhere: `rlhf-dist plan` (placement + memory, pure) and `submit / status / logs / stop` (Ray jobs)."""
