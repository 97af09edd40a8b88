print('demo placeholder')
