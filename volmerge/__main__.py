from volmerge.cli import entry

entry()
