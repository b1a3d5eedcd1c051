print("moetool")
