from batchmap.cli import main

main()
