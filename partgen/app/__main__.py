"""`python -m partgen.app ...`: the same as partgen-app."""

from partgen.app.main import main

main()
