from vidshard.cli.app import main

main()
