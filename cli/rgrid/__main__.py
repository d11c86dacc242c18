from rgrid.cli.main import main

main()
