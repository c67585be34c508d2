from rnnmnist.cli import main

main()
