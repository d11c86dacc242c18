from rgrid.cli.entry import main

main()
