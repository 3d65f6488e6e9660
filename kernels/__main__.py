"""`python -m partgen.kernels`: build the compiled part-attention ops now (make's install step)."""

from partgen.kernels.build import main

raise SystemExit(main())
