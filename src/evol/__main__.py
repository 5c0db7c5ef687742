from evol.cli import main

main()
